"""One forward pass over a scheduled batch, plus sampling: the only place the engine touches torch."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from maas.engine.llm.attention import AttentionMetadata, KVCache, PrefillChunk, SlotAttention
from maas.engine.llm.fused_decode import FusedDecoder
from maas.engine.llm.kv_cache import CopyOp
from maas.engine.llm.request import TokenLogprob
from maas.engine.llm.sampler import SampleRow, argmax_only, sample
from maas.engine.llm.scheduler import Batch, ScheduledSeq
from maas.models.decoder import DecoderLM


@dataclass
class RunnerOutput:
    """Per scheduled item: the sampled token (None for a prefill chunk that did not finish)."""

    tokens: list[int | None]
    logprobs: list[TokenLogprob | None] = field(default_factory=list)


class ModelRunner:
    """Holds the model and its KV cache; turns a `Batch` into sampled tokens."""

    def __init__(
        self,
        model: DecoderLM,
        num_slots: int,
        max_len: int,
        device: torch.device,
        dtype: torch.dtype,
        pool_blocks: int = 0,
        block_size: int = 16,
        fused_decode: bool = True,
        kv_dtype: torch.dtype | None = None,
    ):
        cfg = model.config
        self.model = model
        self.device = device
        native_kv = kv_dtype in (None, torch.float32, torch.float16)  # what the native decoder reads
        self.fused = FusedDecoder.build(model, device, dtype) if fused_decode and native_kv else None
        # auto (None): float16 where the native decoder runs (half the memory of float32); the PyTorch path
        # keeps the model's dtype, which its attention reads without a conversion
        kv_dtype = kv_dtype or (torch.float16 if self.fused is not None else dtype)
        self.cache = KVCache(
            cfg.num_hidden_layers, num_slots, max_len, cfg.num_key_value_heads, cfg.head_dim, kv_dtype, device,
            pool_blocks, block_size,
        )  # fmt: skip
        self._generators: dict[str, torch.Generator] = {}
        # an LM head that can name the largest logit without computing them all (kernels/blocks.py, for rows
        # that only need it: sampler.argmax_only)
        head: Any = model.lm_head
        self._argmax = head.argmax if getattr(head, "prepare_argmax", lambda: False)() else None

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
            slots += [it.seq.slot] * it.num_tokens
        dev = self.device
        dslots = mask = lens_t = None
        S = L = 0
        in_order = False
        if decodes:
            ds = slots[: len(decodes)]
            S, L = max(ds) + 1, max(it.start + 1 for it in decodes)
            lens = [1] * S  # rows that do not decode see one position (their output is ignored)
            for s, it in zip(ds, decodes, strict=True):
                lens[s] = it.start + 1
            lens_t = torch.tensor(lens, device=dev)
            if min(lens) < L:
                mask = (torch.arange(L, device=dev).unsqueeze(0) < lens_t.unsqueeze(1)).view(S, 1, 1, L)
            dslots = torch.tensor(ds, dtype=torch.long, device=dev)
            in_order = ds == list(range(S))
        chunks = []
        off = len(decodes)
        for it in prefills:
            chunks.append(PrefillChunk(off, it.num_tokens, it.start, slots[off]))
            off += it.num_tokens
        meta = AttentionMetadata(
            slots=torch.tensor(slots, dtype=torch.long, device=dev),
            positions=torch.tensor(pos, dtype=torch.long, device=dev),
            num_decodes=len(decodes),
            decode_slots=dslots,
            decode_rows=S,
            decode_len=L,
            decode_mask=mask,
            decode_lens=lens_t,
            decode_in_order=in_order,
            prefills=chunks,
        )
        return order, torch.tensor(ids, dtype=torch.long, device=dev), meta.positions, meta

    def _generator(self, seq_id: str, seed: int | None) -> torch.Generator | None:
        if seed is None:
            return None
        g = self._generators.get(seq_id)
        if g is None:
            g = torch.Generator(device=self.device)
            g.manual_seed(seed)
            self._generators[seq_id] = g
        return g

    def settle(self, ops: list[CopyOp], released: list[int]) -> None:
        """Copies and slot releases due outside a forward pass (sequences that ended with nothing after
        them): leaving sequences' blocks go into the prefix cache, their slots' memory back."""
        if ops or released:
            with torch.inference_mode():
                self.cache.copy_blocks(ops, released)

    def release(self, seq_id: str) -> None:
        """Forget a finished sequence's seeded generator."""
        self._generators.pop(seq_id, None)

    def _hidden_states(
        self, ids: torch.Tensor, pos: torch.Tensor, meta: AttentionMetadata, ends: list[int]
    ) -> torch.Tensor:
        """The final hidden states of rows `ends` (flat indices, ascending), (len(ends), d). Decode rows (first
        in the flat order) go through the fused decoder and prefill rows through its layer-by-layer prefill
        when there is one, which takes the last layer for the `ends` rows only; else everything goes through
        the model."""
        nd = meta.num_decodes
        if self.fused is None:
            hidden = self.model.hidden_states(ids, pos, SlotAttention(self.cache, meta))
            return hidden[torch.tensor(ends, dtype=torch.long, device=self.device)]
        parts = []
        if nd:
            dec = self.fused.hidden_states(ids[:nd], pos[:nd], meta.slots[:nd], self.cache)
            keep = [e for e in ends if e < nd]
            parts.append(
                dec if len(keep) == nd else dec[torch.tensor(keep, dtype=torch.long, device=self.device)]
            )
        if nd < len(ids):
            chunks = [replace(c, offset=c.offset - nd) for c in meta.prefills]
            keep = [e - nd for e in ends if e >= nd]
            parts.append(
                self.fused.prefill_hidden_states(
                    ids[nd:], pos[nd:], meta.slots[nd:], self.cache, chunks, keep
                )
            )
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    @torch.inference_mode()
    def run(self, batch: Batch) -> RunnerOutput:
        """Forward the batch, sample for items that reached their last token."""
        if batch.copies or batch.released:
            self.cache.copy_blocks(batch.copies, batch.released)
        order, ids, pos, meta = self._prepare(batch)
        where = {id(it): i for i, it in enumerate(batch.items)}  # flat order -> the batch's order
        ends: list[int] = []
        rows: list[SampleRow] = []
        targets: list[int] = []
        off = 0
        for it in order:
            off += it.num_tokens
            if it.sample:
                s = it.seq
                ends.append(off - 1)
                rows.append(
                    SampleRow(
                        s.params,
                        s.prompt_token_ids,
                        s.output_token_ids,
                        self._generator(s.seq_id, s.params.seed),
                        s.matcher,
                    )
                )
                targets.append(where[id(it)])
        hidden = self._hidden_states(ids, pos, meta, ends)  # (len(ends), d)
        tokens: list[int | None] = [None] * len(batch.items)
        logprobs: list[TokenLogprob | None] = [None] * len(batch.items)
        if rows:
            toks, lps = self._sample(hidden, rows)
            for j, i in enumerate(targets):
                tokens[i], logprobs[i] = toks[j], lps[j]
        return RunnerOutput(tokens, logprobs)

    def _sample(
        self, hidden: torch.Tensor, rows: list[SampleRow]
    ) -> tuple[list[int], list[TokenLogprob | None]]:
        """The LM head and the sampler over the rows' last hidden states (S, d); rows that only need the largest
        logit ask the head for its index where it can name it without computing every logit."""
        toks: list[int] = [0] * len(rows)
        lps: list[TokenLogprob | None] = [None] * len(rows)
        fast = [i for i, r in enumerate(rows) if argmax_only(r)] if self._argmax is not None else []
        named = self._argmax(hidden[fast]) if fast and self._argmax is not None else None
        if named is None:
            fast = []
        else:
            for i, t in zip(fast, named.tolist(), strict=True):
                toks[i] = t
        done = set(fast)
        rest = [i for i in range(len(rows)) if i not in done]
        if rest:
            logits = self.model.lm_head(hidden[rest] if len(rest) < len(rows) else hidden)  # (S, V)
            for i, t, lp in zip(rest, *sample(logits, [rows[i] for i in rest]), strict=True):
                toks[i], lps[i] = t, lp
        return toks, lps
