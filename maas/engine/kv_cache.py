"""Block accounting for the KV cache: a fixed pool of fixed-size blocks. Plain Python, no torch."""

from __future__ import annotations

from typing import Protocol


class HasBlocks(Protocol):
    """Anything that owns a block table (a Sequence)."""

    block_table: list[int]


class BlockManager:
    """Hands out cache blocks; callers ask `can_grow` before `grow` and `free` when done."""

    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))  # pop() gives low ids first

    @property
    def num_free_blocks(self) -> int:
        """Blocks not held by any sequence."""
        return len(self._free)

    @property
    def usage(self) -> float:
        """Fraction of blocks in use (0..1)."""
        return 1.0 - len(self._free) / self.num_blocks

    def blocks_needed(self, seq: HasBlocks, num_tokens: int) -> int:
        """Extra blocks `seq` needs to hold `num_tokens` tokens."""
        want = -(-num_tokens // self.block_size)
        return max(0, want - len(seq.block_table))

    def can_grow(self, seq: HasBlocks, num_tokens: int) -> bool:
        """True when `seq` can be grown to hold `num_tokens` tokens."""
        return self.blocks_needed(seq, num_tokens) <= len(self._free)

    def grow(self, seq: HasBlocks, num_tokens: int) -> None:
        """Give `seq` enough blocks for `num_tokens` tokens (ask `can_grow` first)."""
        need = self.blocks_needed(seq, num_tokens)
        if need > len(self._free):
            raise RuntimeError(f"KV cache exhausted: need {need} blocks, {len(self._free)} free")
        for _ in range(need):
            seq.block_table.append(self._free.pop())

    def free(self, seq: HasBlocks) -> None:
        """Return all of `seq`'s blocks to the pool."""
        self._free.extend(reversed(seq.block_table))
        seq.block_table = []
