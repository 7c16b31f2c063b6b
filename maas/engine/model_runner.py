"""One forward pass over a scheduled batch, plus sampling: the only place the engine touches torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from maas.engine.attention import AttentionMetadata, KVCache, PagedAttention, PrefillChunk
from maas.engine.request import TokenLogprob
from maas.engine.sampler import SampleRow, sample
from maas.engine.scheduler import Batch, ScheduledSeq


@dataclass
class RunnerOutput:
    """Per scheduled item: the sampled token (None for a prefill chunk that did not finish)."""

    tokens: list[int | None]
    logprobs: list[TokenLogprob | None] = field(default_factory=list)


class ModelRunner:
    """Holds the model and its KV cache; turns a `Batch` into sampled tokens."""

    def __init__(
        self, model: nn.Module, num_blocks: int, block_size: int, device: torch.device, dtype: torch.dtype
    ):
        cfg: Any = model.config
        self.model = model
        self.device = device
        self.block_size = block_size
        self.cache = KVCache(
            cfg.num_hidden_layers,
            num_blocks * block_size,
            cfg.num_key_value_heads,
            cfg.head_dim,
            dtype,
            device,
        )
        self._generators: dict[str, torch.Generator] = {}

    def _slots(self, table: list[int], start: int, end: int) -> list[int]:
        bs = self.block_size
        return [table[p // bs] * bs + p % bs for p in range(start, end)]

    def _prepare(
        self, batch: Batch
    ) -> tuple[list[ScheduledSeq], torch.Tensor, torch.Tensor, AttentionMetadata]:
        decodes = [it for it in batch.items if it.num_tokens == 1 and it.start > 0]
        prefills = [it for it in batch.items if not (it.num_tokens == 1 and it.start > 0)]
        order = decodes + prefills
        ids: list[int] = []
        pos: list[int] = []
        slots: list[int] = []
        for it in order:
            end = it.start + it.num_tokens
            ids += it.seq.token_ids(it.start, end)
            pos += range(it.start, end)
            slots += self._slots(it.seq.block_table, it.start, end)
        dev = self.device
        gather = mask = None
        if decodes:
            L = max(it.start + 1 for it in decodes)
            rows = [self._slots(it.seq.block_table, 0, it.start + 1) for it in decodes]
            gather = torch.tensor([r + [0] * (L - len(r)) for r in rows], dtype=torch.long, device=dev)
            lens = torch.tensor([len(r) for r in rows], device=dev)
            mask = (torch.arange(L, device=dev).unsqueeze(0) < lens.unsqueeze(1)).view(len(rows), 1, 1, L)
        chunks = []
        off = len(decodes)
        for it in prefills:
            g = None
            if it.start > 0:
                g = torch.tensor(self._slots(it.seq.block_table, 0, it.start + it.num_tokens), device=dev)
            chunks.append(PrefillChunk(off, it.num_tokens, it.start, g))
            off += it.num_tokens
        meta = AttentionMetadata(
            slots=torch.tensor(slots, dtype=torch.long, device=dev),
            num_decodes=len(decodes),
            decode_gather=gather,
            decode_mask=mask,
            prefills=chunks,
        )
        return (
            order,
            torch.tensor(ids, dtype=torch.long, device=dev),
            torch.tensor(pos, dtype=torch.long, device=dev),
            meta,
        )

    def _generator(self, seq_id: str, seed: int | None) -> torch.Generator | None:
        if seed is None:
            return None
        g = self._generators.get(seq_id)
        if g is None:
            g = torch.Generator(device=self.device)
            g.manual_seed(seed)
            self._generators[seq_id] = g
        return g

    def release(self, seq_id: str) -> None:
        """Forget per-sequence state (its seeded generator)."""
        self._generators.pop(seq_id, None)

    @torch.inference_mode()
    def run(self, batch: Batch) -> RunnerOutput:
        """Forward the batch, sample for items that reached their last token."""
        order, ids, pos, meta = self._prepare(batch)
        hidden = self.model.hidden_states(ids, pos, PagedAttention(self.cache, meta))  # type: ignore[operator]  # (T, d)
        ends: list[int] = []
        rows: list[SampleRow] = []
        off = 0
        sampled_items: list[int] = []
        for idx, it in enumerate(order):
            off += it.num_tokens
            if it.sample:
                ends.append(off - 1)
                s = it.seq
                rows.append(
                    SampleRow(
                        s.params,
                        s.prompt_token_ids,
                        s.output_token_ids,
                        self._generator(s.seq_id, s.params.seed),
                    )
                )
                sampled_items.append(idx)
        by_item: dict[int, tuple[int, TokenLogprob | None]] = {}
        if rows:
            logits = self.model.lm_head(hidden[torch.tensor(ends, device=self.device)])  # type: ignore[operator]  # (S, V)
            toks, lps = sample(logits, rows)
            for j, idx in enumerate(sampled_items):
                by_item[id(order[idx])] = (toks[j], lps[j])
        tokens: list[int | None] = []
        logprobs: list[TokenLogprob | None] = []
        for it in batch.items:
            t, lp = by_item.get(id(it), (None, None))
            tokens.append(t)
            logprobs.append(lp)
        return RunnerOutput(tokens, logprobs)
