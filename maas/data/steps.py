"""The steps of preparation as plain functions over one chunk, one document or one group: the local engine
loops over them, the Spark engine maps them over partitions."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from maas.data import near_dup
from maas.data.clean import clean, split_of
from maas.data.pack import load_tokenizer, tokenize
from maas.data.sources import Chunk, read

if TYPE_CHECKING:
    from maas.data.prepare import Plan

Key = tuple[int, int]
Doc = tuple[Key, str, str]  # (key, cleaned text, content hash)


def read_clean(chunk: Chunk, plan: Plan) -> Iterator[tuple[Key, str | None]]:
    """Each document of the chunk cleaned (None: removed by cleaning)."""
    for key, text in read(chunk, plan.read):
        yield key, clean(text, plan.clean)


def signed(doc: Doc, threshold: float) -> Iterator[tuple[tuple[int, bytes], tuple[Key, np.ndarray]]]:
    """(band key, (document key, signature)) for each band of the document's MinHash."""
    sig = near_dup.signature(doc[1])
    for band in near_dup.band_keys(sig, threshold):
        yield band, (doc[0], sig)


def split_name(doc: Doc, plan: Plan) -> str:
    """The split the document lands in."""
    o = plan.options
    return split_of(doc[2], o.seed, o.val_fraction, o.test_fraction)


def tokenized(docs: Iterable[Doc], plan: Plan) -> Iterator[tuple[str, np.ndarray]]:
    """(split, tokens + EOS) of each document, in the order given (one tokenizer for them all)."""
    tok = load_tokenizer(plan.tokenizer_json)
    docs = list(docs) if not isinstance(docs, list) else docs
    for doc, tokens in zip(docs, tokenize((d[1] for d in docs), tok, plan.eos_id, plan.dtype), strict=True):
        yield split_name(doc, plan), tokens
