"""The statistics pass: counts each partition makes and the driver merges (a map and a reduce), written into
the manifest."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HISTOGRAM_BINS = 24  # documents by token count: [1], [2, 3], [4, 7], ... [2^23, ...)
TOP = 20
FLUSH = 1 << 20  # tokens buffered before one bincount


@dataclass
class TokenStats:
    """Token counts of a set of documents: how many of each id, and documents by length."""

    vocab_size: int
    counts: np.ndarray = field(init=False)
    lengths: np.ndarray = field(init=False)
    _pending: list[np.ndarray] = field(init=False, default_factory=list)
    _pending_tokens: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.counts = np.zeros(self.vocab_size, dtype=np.int64)
        self.lengths = np.zeros(HISTOGRAM_BINS, dtype=np.int64)

    def add(self, tokens: np.ndarray) -> None:
        """One document's tokens (EOS included)."""
        self.lengths[min(int(len(tokens)).bit_length() - 1, HISTOGRAM_BINS - 1)] += 1
        self._pending.append(tokens)
        self._pending_tokens += len(tokens)
        if self._pending_tokens >= FLUSH:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            flat = np.concatenate(self._pending)
            self.counts += np.bincount(flat, minlength=self.vocab_size)[: self.vocab_size]
        self._pending, self._pending_tokens = [], 0

    def __getstate__(self) -> dict[str, Any]:  # shipped from a Spark executor with its counts complete
        self._flush()
        return dict(self.__dict__)

    def merge(self, other: TokenStats) -> TokenStats:
        """Both partitions' counts together."""
        self._flush()
        other._flush()
        self.counts += other.counts
        self.lengths += other.lengths
        return self

    def report(self, decode: Any) -> dict[str, Any]:
        """tokens, the length histogram, the top tokens (id, text, count) and the unigram entropy (bits a
        token) with its perplexity."""
        self._flush()
        total = int(self.counts.sum())
        p = self.counts[self.counts > 0] / max(total, 1)
        entropy = float(-(p * np.log2(p)).sum()) if total else 0.0
        top = np.argsort(-self.counts, kind="stable")[:TOP]
        last = int(np.nonzero(self.lengths)[0].max()) + 1 if self.lengths.any() else 0
        return {
            "tokens": total,
            "length_histogram": [
                {"min_tokens": 1 << i, "max_tokens": (1 << (i + 1)) - 1, "documents": int(self.lengths[i])}
                for i in range(last)
            ],
            "top_tokens": [
                {"id": int(i), "text": decode(int(i)), "count": int(self.counts[i])}
                for i in top
                if self.counts[i]
            ],
            "unigram_entropy_bits": round(entropy, 4),
            "unigram_perplexity": round(math.pow(2.0, entropy), 2),
        }
