"""Embeddings behind the dynamic batcher: concurrent requests share forward passes.

Each sentence is one item of the batcher (engine/batcher.py). An idle worker waits at most
`max_wait_s` for company, sorts the window by length to cut padding, runs batches of at most
`max_batch_size` sequences and `max_batch_tokens` padded tokens, and hands each request its own
vectors, in its own order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from maas.engine.batcher import Batched, BatchStats, DynamicBatcher, Item
from maas.engine.embedding.embedder import Embedder
from maas.engine.embedding.process import EmbedderProcess
from maas.errors import EngineDeadError

log = logging.getLogger("maas.engine")


@dataclass(frozen=True)
class EmbedOptions:
    """How a served embedding model batches and which weights its small batches read."""

    max_batch_size: int = 64
    max_wait_ms: float = 1.0
    weights: str = "auto"  # Embedder WEIGHT_MODES
    process: bool = False  # forward passes in a child process (EmbedderProcess), not the server's


class EmbeddingEngine(Batched):
    """An Embedder behind a batching worker thread; `await embed(seqs)` from any event loop."""

    def __init__(
        self,
        embedder: Embedder | EmbedderProcess,
        max_batch_size: int = 64,
        max_batch_tokens: int = 16384,
        max_wait_s: float = 0.001,
    ):
        self.embedder = embedder
        self.tokenizer = embedder.tokenizer
        self.max_model_len = embedder.max_len
        self.dim = embedder.dim
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.batcher: DynamicBatcher[list[int], torch.Tensor] = DynamicBatcher(
            self._embed,
            name="embedder",
            max_batch_size=max_batch_size,
            max_wait_s=max_wait_s,
            wait_rows=2,  # an idle worker waits for company; two or more go at once
            window_rows=max_batch_size * 8,  # sort a window several batches wide, then run it
            plan=self._batches,
        )
        self.tokens = 0

    @classmethod
    def from_path(
        cls, path: str, options: EmbedOptions, threads: int = 0, device: str = "cpu"
    ) -> EmbeddingEngine:
        """Load an encoder directory (onto `device`: cpu, cuda or auto) and start its batching worker."""
        cls_ = EmbedderProcess if options.process else Embedder
        e = cls_(path, threads, options.weights, device)
        return cls(e, max_batch_size=options.max_batch_size, max_wait_s=options.max_wait_ms / 1000)

    # -- facts ---------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """True while the worker thread (and the embedding process, if any) runs."""
        return self.batcher.alive and self.embedder.alive

    @property
    def stats_(self) -> BatchStats:
        """The batcher's counters."""
        return self.batcher.stats_

    def stats(self) -> dict[str, float]:
        """Queued sequences and totals since start."""
        s = self.batcher.stats_
        return {
            "queued": self.batcher.queued,
            "tokens": self.tokens,
            "requests": s.requests,
            "sequences": s.items,
            "batches": s.batches,
        }

    def memory_bytes(self) -> int:
        """Bytes the model takes (its parameters in-process; the child's resident memory otherwise)."""
        return self.embedder.memory_bytes()

    # -- callers -------------------------------------------------------------------------------

    async def embed(self, seqs: list[list[int]], dimensions: int | None = None) -> np.ndarray:
        """(len(seqs), dimensions or dim) float32 vectors, in the order given.

        Fewer dimensions keep the first ones and re-normalize (OpenAI's `dimensions`; meaningful
        for Matryoshka-trained models).
        """
        if not self.alive:
            raise EngineDeadError("the embedding worker is not running")
        rows = await self.batcher.submit([(s, 1) for s in seqs])
        v = torch.stack(rows)
        if dimensions is not None and dimensions < v.shape[1]:
            v = torch.nn.functional.normalize(v[:, :dimensions], p=2, dim=-1)
        return v.numpy()

    def shutdown(self) -> None:
        """Stop the worker after the batch in progress, then the embedding process."""
        self.batcher.close()
        self.embedder.close()

    # -- worker --------------------------------------------------------------------------------

    def _batches(self, items: list[Item[Any]]) -> list[list[Item[Any]]]:
        """Longest first; a batch ends at max_batch_size sequences or max_batch_tokens padded tokens."""
        items.sort(key=lambda it: len(it.payload), reverse=True)
        out: list[list[Item[Any]]] = []
        cur: list[Item[Any]] = []
        for it in items:
            longest = len(cur[0].payload) if cur else len(it.payload)
            if cur and (len(cur) >= self.max_batch_size or longest * (len(cur) + 1) > self.max_batch_tokens):
                out.append(cur)
                cur = []
            cur.append(it)
        if cur:
            out.append(cur)
        return out

    def _embed(self, seqs: list[list[int]]) -> list[torch.Tensor]:
        vecs = self.embedder.embed(seqs)
        self.tokens += sum(len(x) for x in seqs)
        return list(vecs)
