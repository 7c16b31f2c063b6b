"""Tokenizing documents and packing their tokens into fixed blocks written as shards: plain functions over
iterators, called alike by every engine (one tokenizer per partition)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")
BATCH = 1024  # documents a tokenizer call


def dtype_for(vocab_size: int) -> np.dtype:
    """The narrowest unsigned type that holds every token id."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def load_tokenizer(tokenizer_json: str) -> Any:
    """A `tokenizers` tokenizer from its JSON (what the driver ships to each partition)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(tokenizer_json)


def tokenize(docs: Iterable[str], tokenizer: Any, eos_id: int, dtype: np.dtype) -> Iterator[np.ndarray]:
    """Each document's tokens followed by EOS, batch-encoded."""
    batch: list[str] = []
    for text in docs:
        batch.append(text)
        if len(batch) == BATCH:
            yield from _encode(batch, tokenizer, eos_id, dtype)
            batch = []
    if batch:
        yield from _encode(batch, tokenizer, eos_id, dtype)


def _encode(batch: list[str], tokenizer: Any, eos_id: int, dtype: np.dtype) -> Iterator[np.ndarray]:
    for e in tokenizer.encode_batch_fast(batch, add_special_tokens=False):
        yield np.array([*e.ids, eos_id], dtype=dtype)


@dataclass
class Shard:
    """One written shard: its file name, blocks and sha256."""

    path: str
    blocks: int
    sha256: str


@dataclass
class SplitWriter:
    """Cuts one split's token stream into blocks of `block` tokens and writes `shard_blocks` blocks a shard
    under `out` (an fsspec URL); the tail shorter than a block is dropped."""

    out: str
    split: str
    block: int
    dtype: np.dtype
    shard_blocks: int
    shards: list[Shard] = field(default_factory=list)
    tokens_in: int = 0
    _buf: list[np.ndarray] = field(default_factory=list)
    _buffered: int = 0
    _digest: Any = field(default_factory=hashlib.sha256)

    def write(self, tokens: np.ndarray) -> None:
        """Append tokens to the split's stream."""
        self.tokens_in += len(tokens)
        self._buf.append(tokens)
        self._buffered += len(tokens)
        while self._buffered >= self.block * self.shard_blocks:
            self._flush(self.shard_blocks)

    def close(self) -> None:
        """Write the last whole blocks."""
        if self._buffered >= self.block:
            self._flush(self._buffered // self.block)
        self._buf, self._buffered = [], 0

    def _flush(self, blocks: int) -> None:
        import fsspec

        flat = np.concatenate(self._buf)
        n = blocks * self.block
        data = np.ascontiguousarray(flat[:n]).astype(self.dtype.newbyteorder("<"), copy=False).tobytes()
        self._buf, self._buffered = [flat[n:]], len(flat) - n
        name = f"{self.split}-{len(self.shards):05d}.bin"
        with fsspec.open(f"{self.out.rstrip('/')}/{name}", "wb") as f:
            f.write(data)
        self._digest.update(data)
        self.shards.append(Shard(name, blocks, hashlib.sha256(data).hexdigest()))

    @property
    def blocks(self) -> int:
        return sum(s.blocks for s in self.shards)

    def digest(self) -> str:
        """sha256 of the split's blocks in order."""
        return self._digest.hexdigest()
