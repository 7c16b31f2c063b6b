"""Turn a batch of logits into next tokens, each row with its own sampling parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from maas.engine.llm.guided import apply_masks
from maas.engine.llm.request import TokenLogprob
from maas.engine.llm.sampling_params import SamplingParams


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


def argmax_only(r: SampleRow) -> bool:
    """Whether a row's token is the first largest of its raw logits: greedy, no penalties, no grammar and no
    logprobs (the only rows an LM head may answer without computing every logit, ModelRunner)."""
    p = r.params
    return (
        p.greedy
        and p.logprobs is None
        and r.matcher is None
        and p.repetition_penalty == 1.0
        and not p.presence_penalty
        and not p.frequency_penalty
    )


_NUCLEUS_GUESS = 1024  # candidates tried first for a row with top_p alone (a full sort only if too few)


def _draw(logits: torch.Tensor, rows: list[SampleRow]) -> list[int]:
    """One sampled token per row: temperature, then the top-k / top-p / min-p filters, then a draw from the
    renormalised survivors with the row's own generator.

    The filters each keep a prefix of the tokens sorted by probability, so only the largest few are
    sorted (topk over the longest prefix any row can keep), never the whole vocabulary, and each row
    draws from its own survivors (its result does not depend on the other rows)."""
    dev = logits.device
    V = logits.shape[-1]
    temps = torch.tensor([max(r.params.temperature, 1e-5) for r in rows], device=dev).unsqueeze(1)
    probs = (logits / temps).softmax(-1)  # (S, V)
    keep = [V] * len(rows)  # the longest prefix each row may keep
    min_p = [r.params.min_p for r in rows]
    if any(m > 0 for m in min_p):
        mp = torch.tensor(min_p, device=dev).unsqueeze(1)
        counts = (probs >= mp * probs.max(-1, keepdim=True).values).sum(-1).tolist()
        keep = [int(c) if m > 0 else V for c, m in zip(counts, min_p, strict=True)]
    keep = [min(n, r.params.top_k) if r.params.top_k > 0 else n for n, r in zip(keep, rows, strict=True)]
    nucleus = [r.params.top_p < 1.0 for r in rows]
    filtered = [i for i, r in enumerate(rows) if keep[i] < V or nucleus[i]]
    tokens = [0] * len(rows)
    for i in set(range(len(rows))) - set(filtered):  # no filter at all: the whole distribution
        tokens[i] = int(torch.multinomial(probs[i], 1, generator=rows[i].generator))
    if not filtered:
        return tokens
    sub = probs[filtered]
    n = max(min(keep[i], _NUCLEUS_GUESS) if keep[i] == V else keep[i] for i in filtered)
    vals, idx = sub.topk(min(n, V))  # sorted, largest first
    ps = torch.tensor([rows[i].params.top_p for i in filtered], device=dev).unsqueeze(1)
    short = (vals.sum(-1, keepdim=True) < ps) & torch.tensor(
        [keep[i] == V for i in filtered], device=dev
    ).unsqueeze(1)
    if n < V and bool(short.any()):  # a flat distribution: the nucleus reaches past the guess
        vals, idx = sub.sort(-1, descending=True)
    before = vals.cumsum(-1) - vals  # mass strictly before each token
    in_nucleus = ((before < ps).sum(-1)).clamp(min=1).tolist()
    for j, i in enumerate(filtered):
        m = min(keep[i], int(in_nucleus[j]), vals.shape[-1])
        pick = torch.multinomial(vals[j, :m], 1, generator=rows[i].generator)
        tokens[i] = int(idx[j, pick])
    return tokens


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
    # max's indices: the first maximum, as argmax's, and a faster kernel on the CPU
    token_list = [int(t) for t in logits.max(-1).indices.tolist()]
    sampled = [i for i, g in enumerate(greedy) if not g]
    if sampled:
        drawn = _draw(logits[sampled], [rows[i] for i in sampled])
        for i, t in zip(sampled, drawn, strict=True):
            token_list[i] = t
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
