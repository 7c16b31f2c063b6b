"""Near-duplicate removal with MinHash LSH (datasketch's MinHash): signatures computed by one function in every
engine, documents grouped by band, and in each connected group of near-duplicates the first document (by key)
kept."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

NUM_PERM = 128
THRESHOLD = 0.7  # the default similarity a candidate pair must reach (--near-threshold)
# LSH shapes (bands, rows) of a 128-value signature; a pair of similarity s becomes a candidate with
# probability 1 - (1 - s^rows)^bands, which turns up at about (1 / bands)^(1 / rows)
SHAPES = ((8, 16), (16, 8), (32, 4), (64, 2))
SHINGLE = 5  # words
SEED = 1

Key = tuple[int, int]


def signature(text: str) -> np.ndarray:
    """The document's MinHash signature over word 5-grams (lower case), uint32 (NUM_PERM,)."""
    from datasketch import MinHash

    words = text.lower().split()
    grams = {" ".join(words[i : i + SHINGLE]) for i in range(max(1, len(words) - SHINGLE + 1))}
    m = MinHash(num_perm=NUM_PERM, seed=SEED)
    m.update_batch([g.encode("utf-8") for g in grams])
    return m.hashvalues.astype(np.uint32)


def shape(threshold: float) -> tuple[int, int]:
    """The LSH shape whose candidates turn up at or just below `threshold` (16 x 8 for 0.7)."""
    fits = [(b, r) for b, r in SHAPES if (1 / b) ** (1 / r) <= threshold + 0.01]
    return fits[0] if fits else SHAPES[-1]


def band_keys(sig: np.ndarray, threshold: float = THRESHOLD) -> list[tuple[int, bytes]]:
    """The (band, digest of the band's rows) keys a document is grouped under."""
    bands, rows = shape(threshold)
    return [(b, hashlib.sha1(sig[b * rows : (b + 1) * rows].tobytes()).digest()[:8]) for b in range(bands)]


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard similarity of two signatures."""
    return float(np.mean(a == b))


def edges(group: list[tuple[Key, np.ndarray]], threshold: float = THRESHOLD) -> list[tuple[Key, Key]]:
    """Within one band group: (first key, other key) for each member at least `threshold` similar to the
    first."""
    if len(group) < 2:
        return []
    group = sorted(group, key=lambda m: m[0])
    first, sig = group[0]
    return [(first, k) for k, s in group[1:] if similarity(sig, s) >= threshold]


def dropped(pairs: Iterable[tuple[Key, Key]]) -> set[Key]:
    """Every key that is in a group of near-duplicates but not its first (smallest) key."""
    parent: dict[Key, Key] = {}

    def root(k: Key) -> Key:
        while parent.get(k, k) != k:
            parent[k] = parent.get(parent[k], parent[k])
            k = parent[k]
        return k

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            lo, hi = min(ra, rb), max(ra, rb)
            parent[hi] = lo
    return {k for k in parent if root(k) != k}
