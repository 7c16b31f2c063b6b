"""Dynamic batching for embeddings: concurrent requests share forward passes.

Requests put their sequences on one queue. A worker thread takes what is queued (waiting at most
`max_wait_s` for more after the first arrives), sorts it by length to cut padding, runs batches
of at most `max_batch_size` sequences and `max_batch_tokens` padded tokens, and hands each
request its own vectors, in its own order. While a batch runs, new requests queue up and go
together in the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from maas.engine.embed_process import EmbedderProcess
from maas.engine.embedder import Embedder
from maas.errors import EngineDeadError

log = logging.getLogger("maas.engine")


@dataclass(frozen=True)
class EmbedOptions:
    """How a served embedding model batches and which weights its small batches read."""

    max_batch_size: int = 64
    max_wait_ms: float = 1.0
    weights: str = "auto"  # Embedder WEIGHT_MODES
    process: bool = False  # forward passes in a child process (EmbedderProcess), not the server's


@dataclass
class _Job:
    seqs: list[list[int]]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[torch.Tensor]
    out: torch.Tensor | None = None
    left: int = 0


@dataclass
class BatchStats:
    """Counters for /health and metrics."""

    requests: int = 0
    sequences: int = 0
    batches: int = 0
    tokens: int = 0
    batch_sizes: list[int] = field(default_factory=list)  # recent batch sizes (last 1000)


class EmbeddingEngine:
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
        self.max_wait_s = max_wait_s
        self.stats_ = BatchStats()
        self.on_batch: Callable[[int], None] | None = None  # called with each batch's size (metrics)
        self._q: queue.Queue[tuple[_Job, int] | None] = queue.Queue()
        self._dead: str | None = None
        self._thread = threading.Thread(target=self._run, name="maas-embedder", daemon=True)
        self._thread.start()

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
        return self._dead is None and self._thread.is_alive() and self.embedder.alive

    def stats(self) -> dict[str, float]:
        """Queued sequences and totals since start."""
        s = self.stats_
        return {
            "queued": self._q.qsize(),
            "tokens": s.tokens,
            "requests": s.requests,
            "sequences": s.sequences,
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
            raise EngineDeadError(f"the embedding worker is not running: {self._dead or 'stopped'}")
        loop = asyncio.get_running_loop()
        job = _Job(seqs, loop, loop.create_future(), left=len(seqs))
        self.stats_.requests += 1
        for i in range(len(seqs)):
            self._q.put((job, i))
        v = await job.future
        if dimensions is not None and dimensions < v.shape[1]:
            v = torch.nn.functional.normalize(v[:, :dimensions], p=2, dim=-1)
        return v.numpy()

    def shutdown(self) -> None:
        """Stop the worker after the batch in progress, then the embedding process."""
        self._q.put(None)
        self._thread.join(10)
        self.embedder.close()

    # -- worker --------------------------------------------------------------------------------

    def _take(self) -> list[tuple[_Job, int]] | None:
        first = self._q.get()
        if first is None:
            return None
        items = [first]
        deadline = time.monotonic() + self.max_wait_s
        limit = self.max_batch_size * 8  # sort a window several batches wide, then run it
        while len(items) < limit:
            wait = max(0.0, deadline - time.monotonic()) if len(items) < 2 else 0.0
            try:
                item = self._q.get(timeout=wait) if wait > 0 else self._q.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._q.put(None)
                break
            items.append(item)
        return items

    def _batches(self, items: list[tuple[_Job, int]]) -> list[list[tuple[_Job, int]]]:
        items.sort(key=lambda it: len(it[0].seqs[it[1]]), reverse=True)
        out: list[list[tuple[_Job, int]]] = []
        cur: list[tuple[_Job, int]] = []
        for it in items:
            longest = len(cur[0][0].seqs[cur[0][1]]) if cur else len(it[0].seqs[it[1]])
            if cur and (len(cur) >= self.max_batch_size or longest * (len(cur) + 1) > self.max_batch_tokens):
                out.append(cur)
                cur = []
            cur.append(it)
        if cur:
            out.append(cur)
        return out

    def _run(self) -> None:
        try:
            while (items := self._take()) is not None:
                for batch in self._batches(items):
                    self._run_batch(batch)
        except Exception as e:  # a bug: fail every waiting request rather than hang them
            self._dead = f"{type(e).__name__}: {e}"
            log.exception("embedding worker stopped")
            err = EngineDeadError(f"the embedding worker stopped: {self._dead}")
            while True:
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    _fail(item[0], err)

    def _run_batch(self, batch: list[tuple[_Job, int]]) -> None:
        seqs = [job.seqs[i] for job, i in batch]
        try:
            vecs = self.embedder.embed(seqs)
        except Exception as e:  # this batch's requests fail; the worker goes on
            if not isinstance(e, EngineDeadError):
                log.exception("embedding batch failed")
                e = EngineDeadError(f"the embedding batch failed: {type(e).__name__}: {e}")
            for job, _ in batch:
                _fail(job, e)
            return
        s = self.stats_
        s.batches += 1
        s.sequences += len(seqs)
        s.tokens += sum(len(x) for x in seqs)
        s.batch_sizes = [*s.batch_sizes[-999:], len(seqs)]
        if self.on_batch is not None:
            self.on_batch(len(seqs))
        for (job, i), v in zip(batch, vecs, strict=True):
            if job.out is None:
                job.out = torch.empty((len(job.seqs), v.shape[0]))
            job.out[i] = v
            job.left -= 1
            if job.left == 0:
                job.loop.call_soon_threadsafe(_resolve, job.future, job.out)


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(job: _Job, err: BaseException) -> None:
    def set_err() -> None:
        if not job.future.done():
            job.future.set_exception(err)

    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
        job.loop.call_soon_threadsafe(set_err)
