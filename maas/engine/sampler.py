"""Turn a batch of logits into next tokens, each row with its own sampling parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from maas.engine.guided import apply_masks
from maas.engine.request import TokenLogprob
from maas.engine.sampling_params import SamplingParams


@dataclass
class SampleRow:
    """What the sampler needs to know about one row of logits."""

    params: SamplingParams
    prompt_token_ids: list[int]
    output_token_ids: list[int]
    generator: torch.Generator | None  # seeded requests carry their own
    matcher: Any = None  # a guided request's grammar matcher: its mask applies before sampling


def _apply_penalties(logits: torch.Tensor, rows: list[SampleRow]) -> torch.Tensor:
    """Repetition (prompt + output), presence and frequency (output) penalties, row by row."""
    V = logits.shape[-1]
    for i, r in enumerate(rows):
        p = r.params
        if p.repetition_penalty != 1.0:
            seen = torch.tensor(sorted(set(r.prompt_token_ids) | set(r.output_token_ids)), dtype=torch.long)
            seen = seen[seen < V].to(logits.device)
            vals = logits[i, seen]
            logits[i, seen] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
        if (p.presence_penalty or p.frequency_penalty) and r.output_token_ids:
            out = torch.tensor(r.output_token_ids, dtype=torch.long, device=logits.device)
            counts = torch.bincount(out[out < V], minlength=V).to(logits.dtype)
            logits[i] -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(logits.dtype)
    return logits


def _filter(logits: torch.Tensor, rows: list[SampleRow]) -> torch.Tensor:
    """Temperature, then top-k / top-p / min-p masks; returns probabilities (S, V)."""
    dev = logits.device
    temps = torch.tensor([max(r.params.temperature, 1e-5) for r in rows], device=dev).unsqueeze(1)
    logits = logits / temps
    top_k = [r.params.top_k for r in rows]
    top_p = [r.params.top_p for r in rows]
    min_p = [r.params.min_p for r in rows]
    V = logits.shape[-1]
    if any(k > 0 for k in top_k) or any(p < 1.0 for p in top_p):
        ks = torch.tensor([k if k > 0 else V for k in top_k], device=dev)
        ps = torch.tensor(top_p, device=dev)
        srt, idx = logits.sort(dim=-1, descending=True)  # (S, V)
        ranks = torch.arange(V, device=dev).unsqueeze(0)
        drop = ranks >= ks.unsqueeze(1)
        probs_sorted = srt.softmax(-1)
        cum = probs_sorted.cumsum(-1) - probs_sorted  # mass strictly before each token
        drop |= cum >= ps.unsqueeze(1)
        drop[:, 0] = False
        srt = srt.masked_fill(drop, float("-inf"))
        logits = torch.empty_like(logits).scatter_(1, idx, srt)
    probs = logits.softmax(-1)
    if any(m > 0 for m in min_p):
        mp = torch.tensor(min_p, device=dev).unsqueeze(1)
        probs = probs.masked_fill(probs < mp * probs.max(-1, keepdim=True).values, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample(logits: torch.Tensor, rows: list[SampleRow]) -> tuple[list[int], list[TokenLogprob | None]]:
    """logits (S, V) float -> one token per row, and logprobs where a row asked for them."""
    logits = logits.float()
    want_lp = [r.params.logprobs is not None for r in rows]
    raw_logprobs = logits.log_softmax(-1) if any(want_lp) else None
    needs_penalty = any(
        r.params.repetition_penalty != 1.0 or r.params.presence_penalty or r.params.frequency_penalty
        for r in rows
    )
    if needs_penalty:
        logits = _apply_penalties(logits.clone(), rows)
    if any(r.matcher is not None for r in rows):
        apply_masks(logits, [r.matcher for r in rows])  # logits are this call's own (raw logprobs taken)
    greedy = [r.params.greedy for r in rows]
    tokens = logits.argmax(-1)
    if not all(greedy):
        probs = _filter(logits, rows)
        for i, r in enumerate(rows):
            if not greedy[i]:
                tokens[i] = torch.multinomial(probs[i], 1, generator=r.generator)[0]
    token_list = [int(t) for t in tokens.tolist()]
    lps: list[TokenLogprob | None] = [None] * len(rows)
    if raw_logprobs is not None:
        for i, r in enumerate(rows):
            k = r.params.logprobs
            if k is None:
                continue
            t = token_list[i]
            top: list[tuple[int, float]] = []
            if k > 0:
                v, ix = raw_logprobs[i].topk(k)
                top = list(zip(ix.tolist(), v.tolist(), strict=True))
            lps[i] = TokenLogprob(t, float(raw_logprobs[i, t]), top)
    return token_list, lps
