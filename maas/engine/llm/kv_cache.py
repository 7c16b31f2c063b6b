"""The one owner of the KV cache's capacity, in plain Python (no torch): which slot each running sequence
writes to, how many tokens may be held at once (a budget of fixed-size blocks), and the prefix cache.

Every running sequence owns a slot: a contiguous region of the cache tensors (see attention.py), lowest
free slot first so that a step's decodes sit in the first slots. Blocks are the unit of the budget and of
the prefix cache: a block id is held by a running sequence (its share of the budget), holds a cached
prefix block in the cache's block pool, or is free.

Prefix caching: when a sequence has computed its prompt, its full blocks become cached where they are, in
its slot (live entries: no copy, no memory of their own); when it leaves (finished, aborted, preempted), the
full blocks it computed are saved into the pool. Each block is keyed by a hash of its tokens and of every
token before it (the chain), held once however many sequences computed it. A new sequence whose prompt
starts with cached blocks gets them copied into its slot (from the pool, or from the live owner's slot)
instead of recomputing them. Cached blocks are given up least recently used first
when running sequences need the budget. A hit is verified token by token, so a hash collision can only
cost a miss, never a wrong answer. The copies are ops the model runner executes before its next forward
pass (`take_ops`).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol


class HasBlocks(Protocol):
    """What the manager needs of a sequence."""

    block_table: list[int]
    num_computed_tokens: int
    slot: int

    @property
    def num_tokens(self) -> int: ...

    def token_ids(self, start: int, end: int) -> list[int]: ...


@dataclass(frozen=True)
class CopyOp:
    """Copy one block between the pool and a slot: save = slot rows -> pool block, else pool -> slot (or,
    from a live entry, the same rows of another slot -> slot)."""

    save: bool
    block: int  # index in the block pool (-1 for a load from another slot)
    slot: int
    start: int  # first token position in the slot
    src_slot: int = -1  # a load from this slot's rows at the same positions


@dataclass
class _Cached:
    block: int  # its share of the budget (-1: live)
    pool: int  # where its keys and values are, in the block pool (-1: live)
    tokens: tuple[int, ...]
    pins: int = 0  # loads scheduled this step that read it
    slot: int = -1  # live: the running sequence's slot that holds it (at position index * block_size)

    @property
    def live(self) -> bool:
        return self.pool < 0


@dataclass
class PrefixStats:
    """Prompt tokens looked up in the prefix cache and tokens found there (Prometheus counters)."""

    queries: int = 0
    hits: int = 0


def _chain(tokens: list[int], block_size: int, n_blocks: int) -> list[tuple[int, tuple[int, ...]]]:
    out = []
    h = 0
    for i in range(n_blocks):
        blk = tuple(tokens[i * block_size : (i + 1) * block_size])
        h = hash((h, blk))
        out.append((h, blk))
    return out


@dataclass
class KVCacheManager:
    """Slots, the block budget and the prefix cache. Callers ask `can_grow` before `grow`."""

    num_slots: int
    num_blocks: int
    block_size: int
    prefix_caching: bool = True
    pool_blocks: int = 0  # the prefix cache's capacity in blocks (0: as many as the budget)
    stats: PrefixStats = field(default_factory=PrefixStats)

    def __post_init__(self) -> None:
        if self.num_blocks < 1 or self.block_size < 1 or self.num_slots < 1:
            raise ValueError("num_slots, num_blocks and block_size must be positive")
        self._free: list[int] = list(range(self.num_blocks - 1, -1, -1))  # pop() gives low ids first
        self._free_slots = list(range(self.num_slots))  # a heap
        self.pool_blocks = min(self.pool_blocks or self.num_blocks, self.num_blocks)
        self._free_pool: list[int] = list(range(self.pool_blocks - 1, -1, -1))
        self._cache: OrderedDict[int, _Cached] = OrderedDict()  # chain hash -> block, least recent first
        self._ops: list[CopyOp] = []
        self._released: list[int] = []  # slots given up since the last take_released()
        self._pinned: list[_Cached] = []  # one entry per pin taken this step
        self._n_pinned = 0  # cached blocks in the pool with a pin
        self._live: dict[int, list[int]] = {}  # slot -> chain hashes of the live entries it holds
        self._n_live = 0

    # -- the budget ---------------------------------------------------------------------------------

    @property
    def num_free_blocks(self) -> int:
        """Blocks not held by a running sequence (free, or holding a cached block that can be given up)."""
        return len(self._free) + self._n_pooled - self._n_pinned

    @property
    def _n_pooled(self) -> int:
        return len(self._cache) - self._n_live

    @property
    def num_cached_blocks(self) -> int:
        """Blocks holding cached prefixes (in the pool, or live in a running sequence's slot)."""
        return len(self._cache)

    @property
    def usage(self) -> float:
        """Fraction of the budget held by running sequences (0..1)."""
        return 1.0 - self.num_free_blocks / self.num_blocks

    def blocks_needed(self, seq: HasBlocks, num_tokens: int) -> int:
        """Extra blocks `seq` needs to hold `num_tokens` tokens."""
        want = -(-num_tokens // self.block_size)
        return max(0, want - len(seq.block_table))

    def can_grow(self, seq: HasBlocks, num_tokens: int, reserve: int = 0) -> bool:
        """True when `seq` can be grown to hold `num_tokens` tokens (keeping `reserve` blocks aside)."""
        return self.blocks_needed(seq, num_tokens) + reserve <= self.num_free_blocks

    def grow(self, seq: HasBlocks, num_tokens: int) -> None:
        """Give `seq` enough blocks for `num_tokens` tokens (ask `can_grow` first)."""
        need = self.blocks_needed(seq, num_tokens)
        if need > self.num_free_blocks:
            raise RuntimeError(f"KV cache exhausted: need {need} blocks, {self.num_free_blocks} free")
        for _ in range(need):
            seq.block_table.append(self._take_block())

    def _take_block(self) -> int:
        if self._free:
            return self._free.pop()
        return self._evict().block

    def _evict(self) -> _Cached:
        """Give up the least recently used cached block in the pool that no copy reads (its pool place is free
        again)."""
        for h, c in self._cache.items():
            if not c.pins and not c.live:
                del self._cache[h]
                self._free_pool.append(c.pool)
                return c
        raise RuntimeError("KV cache exhausted")

    # -- slots --------------------------------------------------------------------------------------

    def match(self, seq: HasBlocks) -> list[tuple[int, _Cached]]:
        """The cached blocks a waiting sequence's tokens start with (always short of its last token), to
        hand to `admit`."""
        if not self.prefix_caching:
            return []
        usable = (seq.num_tokens - 1) // self.block_size  # the last token is always computed (its logits)
        found = []
        for h, blk in _chain(seq.token_ids(0, usable * self.block_size), self.block_size, usable):
            c = self._cache.get(h)
            if c is None or c.tokens != blk:
                break
            found.append((h, c))
        return found

    def lookup(self, seq: HasBlocks) -> int:
        """How many of a waiting sequence's first tokens are in the prefix cache (a multiple of the block
        size, always short of its last token)."""
        return len(self.match(seq)) * self.block_size

    def admit(self, seq: HasBlocks, found: list[tuple[int, _Cached]] | None = None) -> None:
        """A sequence starts running: the lowest free slot, and the cached blocks `match` found for it
        (None: look them up now; []: recompute) copied into the slot before the next forward pass;
        num_computed_tokens moves past them."""
        seq.slot = heapq.heappop(self._free_slots)
        if not self.prefix_caching:
            return
        self.stats.queries += seq.num_tokens
        if found is None:
            found = self.match(seq)
        for i, (h, c) in enumerate(found):
            self._cache.move_to_end(h)
            if not c.pins and not c.live:
                self._n_pinned += 1
            c.pins += 1
            self._pinned.append(c)
            self._ops.append(CopyOp(False, c.pool, seq.slot, i * self.block_size, c.slot))
        seq.num_computed_tokens = len(found) * self.block_size
        self.stats.hits += seq.num_computed_tokens

    def _save(self, seq: HasBlocks) -> None:
        """Copy the full blocks a leaving `seq` computed that are not cached yet into the pool (their share of
        the budget: the sequence's own block ids, else free or evicted ones)."""
        full = seq.num_computed_tokens // self.block_size
        for i, (h, blk) in enumerate(_chain(seq.token_ids(0, full * self.block_size), self.block_size, full)):
            c = self._cache.get(h)
            if c is not None and c.tokens == blk:
                self._cache.move_to_end(h)
                continue
            evictable = self._n_pooled > self._n_pinned
            spare = seq.block_table or self._free or evictable
            if c is not None or not spare or not (self._free_pool or evictable):
                break
            if not self._free_pool:  # the pool is full: its least recently used block makes room
                self._free.append(self._evict().block)
            block = seq.block_table.pop() if seq.block_table else self._take_block()
            pool = self._free_pool.pop()
            self._cache[h] = _Cached(block, pool, blk)
            self._ops.append(CopyOp(True, pool, seq.slot, i * self.block_size))

    def prompt_done(self, seq: HasBlocks) -> None:
        """A sequence finished computing its prompt: its full blocks become cached where they are (live, in
        its slot), so that requests with the same prompt admitted from the next step on (n > 1, a burst
        sharing a system prompt) find them without a copy of them being held twice."""
        if not self.prefix_caching or seq.slot < 0:
            return
        full = seq.num_computed_tokens // self.block_size
        for h, blk in _chain(seq.token_ids(0, full * self.block_size), self.block_size, full):
            c = self._cache.get(h)
            if c is not None:
                if c.tokens != blk:
                    break  # a hash collision: the later blocks' chain is not this one's
                self._cache.move_to_end(h)
                continue
            self._cache[h] = _Cached(-1, -1, blk, slot=seq.slot)
            self._live.setdefault(seq.slot, []).append(h)
            self._n_live += 1

    def _unlive(self, seq: HasBlocks) -> None:
        """Drop the live entries `seq`'s slot holds (it is leaving: `_save` puts them into the pool). No load
        can be pending on them: sequences leave after the step's copies ran, or (preempted) before any
        sequence is admitted."""
        for h in self._live.pop(seq.slot, []):  # only this removes a live entry: each is still cached
            if self._cache.pop(h).pins:
                raise RuntimeError("a live prefix-cache block left while a copy of it was pending")
            self._n_live -= 1

    def free(self, seq: HasBlocks) -> None:
        """A sequence leaves: its computed full blocks go into the prefix cache's pool (those it held live
        are copied there); its slot and blocks are given back."""
        if self.prefix_caching and seq.slot >= 0:
            self._unlive(seq)
            self._save(seq)
        self._free.extend(reversed(seq.block_table))
        seq.block_table = []
        if seq.slot >= 0:
            heapq.heappush(self._free_slots, seq.slot)
            self._released.append(seq.slot)
            seq.slot = -1

    def take_released(self) -> list[int]:
        """Slots given up since the last call, whose memory may go back to the system once the saves
        `take_ops` returned with them are done (a slot reused meanwhile is written from scratch)."""
        out, self._released = self._released, []
        return out

    def take_ops(self) -> list[CopyOp]:
        """The copies to do before the next forward pass (saves first: a slot given up may be reused by a
        sequence admitted in the same step); the blocks they read stop being pinned."""
        ops = sorted(self._ops, key=lambda o: not o.save)
        self._ops = []
        for c in self._pinned:
            c.pins -= 1
            if not c.pins and not c.live:
                self._n_pinned -= 1
        self._pinned = []
        return ops
