"""Near-duplicate removal with MinHash LSH (datasketch's MinHash): signatures computed by one function in every
engine, documents grouped by band, and in each connected group of near-duplicates the first document (by key)
kept."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

NUM_PERM = 128
BANDS, ROWS = 16, 8  # candidates from about 0.7 Jaccard similarity on
THRESHOLD = 0.7  # the estimated similarity a candidate pair must reach
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


def band_keys(sig: np.ndarray) -> list[tuple[int, bytes]]:
    """The (band, digest of the band's rows) keys a document is grouped under."""
    return [(b, hashlib.sha1(sig[b * ROWS : (b + 1) * ROWS].tobytes()).digest()[:8]) for b in range(BANDS)]


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard similarity of two signatures."""
    return float(np.mean(a == b))


def edges(group: list[tuple[Key, np.ndarray]]) -> list[tuple[Key, Key]]:
    """Within one band group: (first key, other key) for each member similar enough to the first."""
    if len(group) < 2:
        return []
    group = sorted(group, key=lambda m: m[0])
    first, sig = group[0]
    return [(first, k) for k, s in group[1:] if similarity(sig, s) >= THRESHOLD]


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
