"""Continuous batching: which sequences run this step and how many tokens each. Plain Python.

Every step has a token budget. Running sequences go first (a decode needs one token; a prompt
still being prefilled takes a chunk), then waiting ones are admitted while the budget, the
sequence limit and the KV cache allow. When the cache cannot hold a running sequence's next
token, the most recently admitted sequence is preempted: its blocks are freed and it goes back
to the front of the queue to be recomputed later.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from maas.engine.llm.kv_cache import CopyOp, KVCacheManager
from maas.engine.llm.request import Sequence, Status


@dataclass
class ScheduledSeq:
    """One sequence's share of a step: tokens [start, start + num_tokens) are computed."""

    seq: Sequence
    start: int
    num_tokens: int
    sample: bool  # True when this chunk reaches the sequence's last token


@dataclass
class Batch:
    """The scheduler's answer for one step."""

    items: list[ScheduledSeq] = field(default_factory=list)
    copies: list[CopyOp] = field(default_factory=list)  # prefix-cache copies to do before the forward pass
    released: list[int] = field(default_factory=list)  # slots whose memory goes back after the saves
    preempted: list[Sequence] = field(default_factory=list)
    finished: list[Sequence] = field(default_factory=list)  # stopped while scheduling (cannot fit)

    @property
    def num_tokens(self) -> int:
        """Tokens computed this step."""
        return sum(i.num_tokens for i in self.items)

    def __bool__(self) -> bool:
        return bool(self.items or self.finished)


class Scheduler:
    """Owns the waiting queue, the running list and the KV cache manager, which it asks for room."""

    def __init__(
        self,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int,
        num_blocks: int,
        block_size: int,
        prefix_cache_blocks: int = 0,
    ):
        caching = prefix_cache_blocks > 0
        self.kv = KVCacheManager(max_num_seqs, num_blocks, block_size, caching, prefix_cache_blocks)
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        """Queue a new sequence."""
        seq.status = Status.WAITING
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        """True while anything waits or runs."""
        return bool(self.waiting or self.running)

    def take_cache_work(self) -> tuple[list[CopyOp], list[int]]:
        """Prefix-cache copies and released slots since the last step, for the runner to carry out."""
        return self.kv.take_ops(), self.kv.take_released()

    def cache_stats(self) -> dict[str, float]:
        """KV-cache usage and the prefix cache's counters."""
        return {
            "kv_cache_usage": self.kv.usage,
            "prefix_cache_queries": self.kv.stats.queries,
            "prefix_cache_hits": self.kv.stats.hits,
        }

    def finish(self, seq: Sequence, reason: str) -> None:
        """Stop a sequence now (stop string, abort) and free its cache."""
        if seq.status is Status.FINISHED:
            return
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.kv.free(seq)
        seq.status = Status.FINISHED
        seq.finish_reason = reason

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.kv.free(seq)
        seq.num_computed_tokens = 0
        seq.status = Status.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def schedule(self) -> Batch:
        """Pick this step's work."""
        batch = Batch()
        budget = self.max_num_batched_tokens
        scheduled: set[int] = set()
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = min(seq.num_tokens - seq.num_computed_tokens, budget)
            target = seq.num_computed_tokens + n
            while not self.kv.can_grow(seq, target):
                if len(self.running) == 1:  # alone and still too big: the cache cannot hold it
                    self.finish(seq, "length")
                    batch.finished.append(seq)
                    break
                victim = self.running[-1]
                self._preempt(victim)
                batch.preempted.append(victim)
                if victim is seq:
                    break
            if seq.status is Status.FINISHED:
                continue
            if seq.status is not Status.RUNNING:
                break
            self.kv.grow(seq, target)
            batch.items.append(ScheduledSeq(seq, seq.num_computed_tokens, n, target == seq.num_tokens))
            scheduled.add(id(seq))
            budget -= n
            i += 1
        while self.waiting and not batch.preempted and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            found = self.kv.match(seq)
            cached = len(found) * self.kv.block_size
            n = min(seq.num_tokens - cached, budget)
            target = cached + n
            if found and not self.kv.can_grow(seq, target, reserve=len(found)):
                found = []  # no room for the cached copy next to its own blocks: recompute instead
                n = min(seq.num_tokens, budget)
                target = n
            if not self.kv.can_grow(seq, target):
                if not self.running and not batch.items:  # an empty cache cannot hold it
                    self.finish(seq, "length")
                    batch.finished.append(seq)
                    continue
                break
            self.waiting.popleft()
            self.kv.admit(seq, found)  # a slot, and the cached prefix (num_computed_tokens moves past it)
            self.kv.grow(seq, target)
            seq.status = Status.RUNNING
            if seq.first_scheduled is None:
                seq.first_scheduled = time.monotonic()
            self.running.append(seq)
            batch.items.append(ScheduledSeq(seq, seq.num_computed_tokens, n, target == seq.num_tokens))
            budget -= n
        if batch.items:
            batch.copies, batch.released = self.take_cache_work()
        return batch

    def update(
        self, batch: Batch, sampled: list[int | None], eos_token_ids: frozenset[int]
    ) -> list[Sequence]:
        """Record a step's results: advance computed tokens, append sampled ones, finish on stops.

        Returns the sequences that received a token this step.
        """
        touched: list[Sequence] = []
        for item, tok in zip(batch.items, sampled, strict=True):
            seq = item.seq
            if seq.status is not Status.RUNNING:
                continue  # aborted while the step ran
            seq.num_computed_tokens = item.start + item.num_tokens
            if not item.sample or tok is None:
                continue
            if not seq.output_token_ids:  # the prompt is computed: its blocks become reusable now
                self.kv.prompt_done(seq)
            seq.output_token_ids.append(tok)
            touched.append(seq)
            p = seq.params
            if tok in p.stop_token_ids or (not p.ignore_eos and tok in eos_token_ids):
                self.finish(seq, "stop")
            elif len(seq.output_token_ids) >= seq.max_tokens or seq.num_tokens >= self.max_model_len:
                self.finish(seq, "length")
        return touched
