"""Cleaning and exact deduplication: plain functions over one document, the same in every engine."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

# C0 / C1 control characters except tab and newline
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[ \t]+")


@dataclass(frozen=True)
class CleanOptions:
    """What cleaning keeps: documents of at least `min_chars` characters after normalization."""

    min_chars: int = 1
    normalize: str = "NFC"  # unicode normal form, or "none"


def clean(text: str, options: CleanOptions) -> str | None:
    """The document normalized (unicode form, control characters dropped, runs of spaces collapsed, lines
    stripped), or None when it is shorter than `min_chars`."""
    if options.normalize != "none":
        text = unicodedata.normalize(options.normalize, text)  # type: ignore[arg-type]
    text = _CONTROL.sub("", text)
    text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n")).strip()
    return text if len(text) >= max(options.min_chars, 1) else None


def content_hash(text: str) -> str:
    """The exact-duplicate key of a cleaned document."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def split_of(text_hash: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    """train, val or test, by a hash of the document and the seed (the same document always lands in the
    same split, whatever the engine or partitioning)."""
    u = int(hashlib.sha1(f"{seed}:{text_hash}".encode()).hexdigest()[:15], 16) / float(1 << 60)
    if u < val_fraction:
        return "val"
    if u < val_fraction + test_fraction:
        return "test"
    return "train"
