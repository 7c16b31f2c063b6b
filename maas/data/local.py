"""The local engine: every step in this process, no JVM."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import TYPE_CHECKING

from tqdm import tqdm

from maas.data import near_dup
from maas.data.clean import content_hash
from maas.data.pack import SplitWriter
from maas.data.stats import TokenStats
from maas.data.steps import Doc, read_clean, signed, tokenized

if TYPE_CHECKING:
    from maas.data.prepare import Plan

log = logging.getLogger("maas.data")


def documents(plan: Plan) -> list[Doc]:
    """Read, clean and deduplicate: the documents kept, in key order; plan.counts filled in."""
    docs: list[Doc] = []
    read = 0
    for chunk in tqdm(plan.chunks, desc="reading", unit="chunk", disable=len(plan.chunks) < 2):
        for key, text in read_clean(chunk, plan):
            read += 1
            if text is not None:
                docs.append((key, text, content_hash(text)))
    docs.sort(key=lambda d: d[0])
    plan.counts.update(read=read, removed_by_cleaning=read - len(docs))
    if plan.options.dedup in ("exact", "near"):
        seen: set[str] = set()
        kept = []
        for d in docs:  # in key order: the first of each text stays
            if d[2] not in seen:
                seen.add(d[2])
                kept.append(d)
        plan.counts["exact_duplicates"] = len(docs) - len(kept)
        docs = kept
    if plan.options.dedup == "near":
        groups: dict[tuple[int, bytes], list] = defaultdict(list)
        for d in tqdm(docs, desc="minhash", unit="doc", mininterval=2):
            for band, member in signed(d, plan.options.near_threshold):
                groups[band].append(member)
        t = plan.options.near_threshold
        drop = near_dup.dropped(e for g in groups.values() for e in near_dup.edges(g, t))
        plan.counts["near_duplicates"] = len(drop)
        docs = [d for d in docs if d[0] not in drop]
    plan.counts["kept"] = len(docs)
    return docs


def run(plan: Plan) -> tuple[dict[str, SplitWriter], TokenStats]:
    """Prepare in this process: the writers (not yet closed) and the token statistics."""
    docs = documents(plan)
    writers = plan.writers()
    stats = TokenStats(plan.vocab_size)
    for split, tokens in tqdm(
        tokenized(docs, plan), total=len(docs), desc="tokenizing", unit="doc", mininterval=2
    ):
        stats.add(tokens)
        writers[split].write(tokens)
        plan.counts[f"{split}_documents"] = plan.counts.get(f"{split}_documents", 0) + 1
    return writers, stats
