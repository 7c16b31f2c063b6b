from dataclasses import dataclass, field

import pytest

from maas.engine.kv_cache import BlockManager


@dataclass
class Seq:
    block_table: list[int] = field(default_factory=list)


def test_grow_allocates_ceil_blocks_and_free_returns_them():
    bm = BlockManager(num_blocks=10, block_size=4)
    s = Seq()
    assert bm.can_grow(s, 9)
    bm.grow(s, 9)
    assert len(s.block_table) == 3 and bm.num_free_blocks == 7
    bm.grow(s, 12)  # still fits in 3 blocks
    assert len(s.block_table) == 3
    bm.grow(s, 13)
    assert len(s.block_table) == 4 and len(set(s.block_table)) == 4
    bm.free(s)
    assert s.block_table == [] and bm.num_free_blocks == 10 and bm.usage == 0.0


def test_cannot_grow_past_budget_and_grow_refuses():
    bm = BlockManager(num_blocks=2, block_size=4)
    a, b = Seq(), Seq()
    bm.grow(a, 8)
    assert not bm.can_grow(b, 1)
    with pytest.raises(RuntimeError):
        bm.grow(b, 1)
    assert bm.usage == 1.0


def test_blocks_are_never_shared():
    bm = BlockManager(num_blocks=16, block_size=2)
    seqs = [Seq() for _ in range(4)]
    for i, s in enumerate(seqs):
        bm.grow(s, 2 * (i + 1))
    held = [b for s in seqs for b in s.block_table]
    assert len(held) == len(set(held)) == 10
