"""The KV cache manager with fake sequences: the block budget, slots, and the prefix cache's bookkeeping."""

from dataclasses import dataclass, field

import pytest

from maas.engine.llm.kv_cache import KVCacheManager


@dataclass
class Seq:
    tokens: list[int] = field(default_factory=list)
    block_table: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    slot: int = -1

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    def token_ids(self, start: int, end: int) -> list[int]:
        return self.tokens[start:end]


def test_grow_allocates_ceil_blocks_and_free_returns_them():
    kv = KVCacheManager(4, num_blocks=10, block_size=4, prefix_caching=False)
    s = Seq()
    assert kv.can_grow(s, 9)
    kv.grow(s, 9)
    assert len(s.block_table) == 3 and kv.num_free_blocks == 7
    kv.grow(s, 12)  # still fits in 3 blocks
    assert len(s.block_table) == 3
    kv.grow(s, 13)
    assert len(s.block_table) == 4 and len(set(s.block_table)) == 4
    kv.free(s)
    assert s.block_table == [] and kv.num_free_blocks == 10 and kv.usage == 0.0


def test_cannot_grow_past_budget_and_grow_refuses():
    kv = KVCacheManager(4, num_blocks=2, block_size=4)
    a, b = Seq(), Seq()
    kv.grow(a, 8)
    assert not kv.can_grow(b, 1)
    with pytest.raises(RuntimeError):
        kv.grow(b, 1)
    assert kv.usage == 1.0


def test_blocks_are_never_shared_and_slots_go_lowest_first():
    kv = KVCacheManager(4, num_blocks=16, block_size=2)
    seqs = [Seq(list(range(i, i + 5))) for i in range(4)]
    for i, s in enumerate(seqs):
        kv.admit(s)
        kv.grow(s, 2 * (i + 1))
    held = [b for s in seqs for b in s.block_table]
    assert len(held) == len(set(held)) == 10
    assert [s.slot for s in seqs] == [0, 1, 2, 3]
    kv.free(seqs[1])
    again = Seq([99] * 3)
    kv.admit(again)
    assert again.slot == 1


def finished(kv: KVCacheManager, tokens: list[int]) -> Seq:
    """A sequence that computed all but its last token, then left."""
    s = Seq(tokens)
    kv.admit(s)
    kv.grow(s, len(tokens))
    s.num_computed_tokens = len(tokens) - 1
    kv.free(s)
    return s


def test_a_left_sequence_full_blocks_are_cached_and_a_new_prompt_reuses_them():
    kv = KVCacheManager(2, num_blocks=8, block_size=4)
    finished(kv, list(range(11)))  # 10 computed: blocks [0..3] and [4..7] are full
    saves = kv.take_ops()
    assert [(o.save, o.slot, o.start) for o in saves] == [(True, 0, 0), (True, 0, 4)]
    assert kv.num_cached_blocks == 2 and kv.num_free_blocks == 8  # cached blocks still count as free
    new = Seq([*range(8), 50, 51, 52, 53])
    assert kv.lookup(new) == 8
    kv.admit(new)
    assert new.num_computed_tokens == 8 and kv.stats.hits == 8 and kv.stats.queries == 11 + 12
    loads = kv.take_ops()
    assert [(o.save, o.block, o.slot, o.start) for o in loads] == [
        (False, saves[0].block, new.slot, 0), (False, saves[1].block, new.slot, 4)]  # fmt: skip


def test_the_last_token_is_never_taken_from_the_cache_and_other_prefixes_miss():
    kv = KVCacheManager(2, num_blocks=8, block_size=4)
    finished(kv, list(range(9)))
    kv.take_ops()
    assert kv.lookup(Seq(list(range(8)))) == 4  # 8 tokens cached, but the 8th must be computed
    assert kv.lookup(Seq([1, *range(1, 9)])) == 0  # a different first block: no hit at all
    assert KVCacheManager(2, 8, 4, prefix_caching=False).lookup(Seq(list(range(9)))) == 0


def test_running_sequences_take_back_cached_blocks_least_recent_first_but_never_pinned_ones():
    kv = KVCacheManager(4, num_blocks=4, block_size=2)
    finished(kv, [1, 2, 3, 4, 5])  # caches [1,2] [3,4]
    finished(kv, [7, 8, 9])  # caches [7,8]
    kv.take_ops()
    assert kv.num_cached_blocks == 3
    reader = Seq([7, 8, 0])
    kv.admit(reader)  # pins [7,8] until the runner took the ops
    grower = Seq(list(range(100, 106)))
    assert kv.can_grow(grower, 4, reserve=0) and not kv.can_grow(grower, 8)
    kv.grow(grower, 4)  # takes the free block, then the least recent cached one ([1,2])
    assert kv.lookup(Seq([1, 2, 3, 4, 9])) == 0
    assert kv.lookup(Seq([7, 8, 1])) == 2
    kv.take_ops()


def test_a_hash_collision_is_a_miss():
    kv = KVCacheManager(2, num_blocks=8, block_size=2)
    finished(kv, [1, 2, 3])
    kv.take_ops()
    (cached,) = kv._cache.values()
    cached.tokens = (9, 9)  # as if another block had the same hash
    assert kv.lookup(Seq([1, 2, 3])) == 0


def test_a_full_pool_gives_up_its_least_recently_used_block():
    kv = KVCacheManager(4, num_blocks=16, block_size=2, pool_blocks=2)
    for first in (10, 20, 30):  # three sequences, one full block each
        finished(kv, [first, first + 1, first + 2])
    saves = kv.take_ops()
    assert kv.num_cached_blocks == 2 and all(0 <= o.block < 2 for o in saves)
    assert kv.lookup(Seq([10, 11, 0])) == 0  # the oldest was given up
    assert kv.lookup(Seq([20, 21, 0])) == 2 and kv.lookup(Seq([30, 31, 0])) == 2
    assert kv.num_free_blocks == 16  # the budget ids came back


def test_a_computed_prompt_is_cached_live_in_its_slot_and_moves_to_the_pool_when_it_leaves():
    kv = KVCacheManager(4, num_blocks=16, block_size=4)
    owner = Seq(list(range(11)))
    kv.admit(owner)
    kv.grow(owner, 11)
    owner.num_computed_tokens = 11
    kv.prompt_done(owner)
    assert kv.take_ops() == []  # no copy: the two full blocks stay in the owner's slot
    assert kv.num_cached_blocks == 2 and kv.num_free_blocks == 16 - 3  # and hold no budget of their own
    twin = Seq(list(range(11)))
    kv.admit(twin)
    assert twin.num_computed_tokens == 8
    loads = kv.take_ops()
    assert [(o.save, o.slot, o.start, o.src_slot) for o in loads] == [
        (False, twin.slot, 0, owner.slot), (False, twin.slot, 4, owner.slot)]  # fmt: skip
    slot = owner.slot
    kv.free(owner)  # leaving: its blocks are copied into the pool, then its slot is given back
    saves = kv.take_ops()
    assert [(o.save, o.slot, o.start) for o in saves] == [(True, slot, 0), (True, slot, 4)]
    assert kv.take_released() == [slot]
    third = Seq([*range(8), 70, 71])
    kv.admit(third)
    loads = kv.take_ops()
    assert [(o.block, o.src_slot) for o in loads] == [(saves[0].block, -1), (saves[1].block, -1)]
