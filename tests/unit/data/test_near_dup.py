"""MinHash LSH finds planted near-duplicates, keeps the first of each group, and leaves distinct text alone."""

from __future__ import annotations

import random
from collections import defaultdict

from maas.data import near_dup


def perturb(text: str, rng: random.Random, edits: int = 3) -> str:
    words = text.split()
    for _ in range(edits):
        words[rng.randrange(len(words))] = rng.choice(["alpha", "beta", "gamma", "delta"])
    return " ".join(words)


def test_planted_near_duplicates_are_found_and_the_first_is_kept() -> None:
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(5000)]
    originals = [" ".join(rng.choice(vocab) for _ in range(120)) for _ in range(200)]
    docs = {(0, i): t for i, t in enumerate(originals)}
    planted = set()
    for i in range(0, 200, 4):  # a near copy of every fourth document, later in the corpus
        docs[(1, i)] = perturb(originals[i], rng)
        planted.add((1, i))
    groups = defaultdict(list)
    for key, text in docs.items():
        sig = near_dup.signature(text)
        for band in near_dup.band_keys(sig):
            groups[band].append((key, sig))
    drop = near_dup.dropped(e for g in groups.values() for e in near_dup.edges(g))
    found = drop & planted
    precision, recall = len(found) / max(len(drop), 1), len(found) / len(planted)
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
    assert not drop & {(0, i) for i in range(200)}, "an original (the first of its group) was dropped"


def test_the_kept_document_does_not_depend_on_the_order_of_pairs() -> None:
    pairs = [((0, 5), (0, 9)), ((0, 9), (0, 2)), ((1, 0), (0, 5))]
    assert near_dup.dropped(pairs) == near_dup.dropped(reversed(pairs)) == {(0, 5), (0, 9), (1, 0)}


def test_the_threshold_decides_what_is_a_near_duplicate() -> None:
    rng = random.Random(1)
    vocab = [f"w{i}" for i in range(5000)]
    originals = [" ".join(rng.choice(vocab) for _ in range(20)) for _ in range(100)]
    copies = {(1, i): perturb(t, rng, edits=1) for i, t in enumerate(originals)}  # about 0.5 similar

    def found(threshold: float) -> int:
        groups = defaultdict(list)
        for key, text in [*(((0, i), t) for i, t in enumerate(originals)), *copies.items()]:
            sig = near_dup.signature(text)
            for band in near_dup.band_keys(sig, threshold):
                groups[band].append((key, sig))
        return len(
            near_dup.dropped(e for g in groups.values() for e in near_dup.edges(g, threshold)) & set(copies)
        )

    assert near_dup.shape(0.7) == (16, 8) and near_dup.shape(0.45) == (32, 4)
    strict, loose = found(0.7), found(0.4)
    assert strict < 30 and loose > 80, (strict, loose)
