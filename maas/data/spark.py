"""The Spark engine: the same step functions mapped over partitions (reading, cleaning, MinHash and
tokenizing in the executors; grouping by content hash and by LSH band in Spark's shuffles); each partition
writes its token pieces, and the driver cuts them into blocks in key order, as the local engine does."""

from __future__ import annotations

import logging
import math
import os
import re
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from maas.data import near_dup
from maas.data.clean import content_hash
from maas.data.pack import SPLITS, SplitWriter
from maas.data.sources import chunks
from maas.data.stats import TokenStats
from maas.data.steps import Doc, read_clean, signed, tokenized
from maas.errors import InvalidRequestError

if TYPE_CHECKING:
    from maas.data.prepare import Plan

log = logging.getLogger("maas.data")
MIN_CHUNK = 64 << 10


def session(master: str) -> Any:
    """The running SparkSession, or a new one on `master` (the UI off; executors run this interpreter)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise InvalidRequestError(
            "--engine spark needs PySpark and Java 17+: pip install 'maas[spark]' (or use --engine local)"
        ) from None
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    try:
        spark = (
            SparkSession.builder.master(master)
            .appName("maas data prepare")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .getOrCreate()
        )
        spark.sparkContext.setLogLevel("ERROR")
        return spark
    except Exception as e:  # no Java, a master that does not answer
        raise InvalidRequestError(
            f"cannot start Spark on {master}: {str(e).splitlines()[0]} (Java 17+ needed)"
        ) from None


def _configured(plan: Plan) -> Plan:
    """In an executor: the driver's fsspec settings (endpoints, credentials) applied, once a process."""
    import fsspec.config

    for protocol, kwargs in plan.fsspec_conf.items():
        fsspec.config.conf.setdefault(protocol, {}).update(kwargs)
    return plan


def _first(a: Doc, b: Doc) -> Doc:
    return a if a[0] <= b[0] else b


def run(plan: Plan) -> tuple[dict[str, SplitWriter], TokenStats]:
    """Prepare on Spark: the writers (not yet closed) and the token statistics. A user's mistake found in an
    executor (a line that is not JSON) comes back as its one-line message, not as Spark's traceback."""
    try:
        return _run(plan)
    except Exception as e:
        found = re.search(r"maas\.(?:errors|train\.config)\.\w+: (.+)", str(e))
        if found is None:
            raise
        raise InvalidRequestError(found.group(1).strip()) from None


def _run(plan: Plan) -> tuple[dict[str, SplitWriter], TokenStats]:
    sc = session(plan.options.master).sparkContext
    n = plan.options.partitions or sc.defaultParallelism
    total = sum(s.size for s in plan.sources)
    pieces = chunks(plan.sources, plan.read, max(MIN_CHUNK, math.ceil(total / n)))
    bplan = sc.broadcast(plan)
    read = sc.parallelize(pieces, max(1, min(n, len(pieces)))).flatMap(
        lambda c: read_clean(c, _configured(bplan.value))
    )
    read.persist()
    docs = read.filter(lambda kt: kt[1] is not None).map(lambda kt: (kt[0], kt[1], content_hash(kt[1])))
    plan.counts["read"] = read.count()
    cleaned = docs.count()
    plan.counts["removed_by_cleaning"] = plan.counts["read"] - cleaned
    if plan.options.dedup in ("exact", "near"):
        docs = docs.map(lambda d: (d[2], d)).reduceByKey(_first, n).values().persist()
        plan.counts["exact_duplicates"] = cleaned - docs.count()
    if plan.options.dedup == "near":
        t = plan.options.near_threshold
        pairs = (
            docs.flatMap(lambda d: signed(d, t))
            .groupByKey(n)
            .flatMap(lambda g: near_dup.edges(list(g[1]), t))
        )
        pairs = pairs.collect()
        drop = sc.broadcast(near_dup.dropped(pairs))
        plan.counts["near_duplicates"] = len(drop.value)
        docs = docs.filter(lambda d: d[0] not in drop.value)
    out = f"{plan.options.out.rstrip('/')}/_pieces"
    written = docs.sortBy(lambda d: d[0], numPartitions=n).mapPartitionsWithIndex(
        lambda i, part: [_write_piece(i, part, _configured(bplan.value), out)]
    )
    results = sorted(written.collect(), key=lambda r: r[0])
    read.unpersist()
    return _assemble(plan, out, results)


def _write_piece(index: int, part: Any, plan: Plan, out: str) -> tuple[int, dict[str, int], TokenStats]:
    """In an executor: tokenize this partition's documents (in key order) and write one piece a split."""
    import fsspec

    stats = TokenStats(plan.vocab_size)
    by_split: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    docs_by_split = dict.fromkeys(SPLITS, 0)
    for split, tokens in tokenized(list(part), plan):
        stats.add(tokens)
        by_split[split].append(tokens)
        docs_by_split[split] += 1
    for split, arrays in by_split.items():
        if arrays:
            with fsspec.open(f"{out}/p{index:05d}-{split}.bin", "wb") as f:
                f.write(np.concatenate(arrays).astype(plan.dtype.newbyteorder("<"), copy=False).tobytes())
    return index, docs_by_split, stats


def _assemble(
    plan: Plan, out: str, results: list[tuple[int, dict[str, int], TokenStats]]
) -> tuple[dict[str, SplitWriter], TokenStats]:
    """On the driver: the pieces in partition order through one writer a split (blocks cut from the global
    offsets, as the local engine cuts them), then the pieces removed."""
    import fsspec

    writers = plan.writers()
    stats = TokenStats(plan.vocab_size)
    fs, root = fsspec.core.url_to_fs(out)
    for index, docs_by_split, part_stats in results:
        stats.merge(part_stats)
        for split, count in docs_by_split.items():
            if count:
                plan.counts[f"{split}_documents"] = plan.counts.get(f"{split}_documents", 0) + count
                with fs.open(f"{root}/p{index:05d}-{split}.bin", "rb") as f:
                    writers[split].write(np.frombuffer(f.read(), dtype=plan.dtype.newbyteorder("<")))
    if fs.exists(root):
        fs.rm(root, recursive=True)
    plan.counts["kept"] = sum(sum(r[1].values()) for r in results)
    return writers, stats
