"""`maas data prepare|show`: corpora cleaned, deduplicated, tokenized and packed into blocks for training."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> None:
    """Register `maas data` and its verbs."""
    p = sub.add_parser("data", help="prepare corpora into token blocks (locally or on Spark), show one",
                       description="Clean, deduplicate, split, tokenize and pack text corpora into sharded "
                       "token blocks with a manifest, in this process or on Spark, with the same result.")  # fmt: skip
    verbs = p.add_subparsers(dest="data_verb", metavar="VERB", required=True)
    prep = verbs.add_parser("prepare", help="prepare a dataset from text, JSONL or Parquet sources",
                            description="Steps: clean, deduplicate (exact / near), split by document hash, "
                            "tokenize, pack into blocks of --block-size tokens (documents end with EOS), write "
                            "shards and, last, manifest.json. Sources and --out take paths, globs or fsspec "
                            "URLs (s3://...).")  # fmt: skip
    prep.add_argument(
        "sources", nargs="+", metavar="SOURCE", help="text, .jsonl or .parquet files, globs, URLs"
    )
    prep.add_argument("--tokenizer", required=True, help="a model name or path, or a tokenizer.json")
    prep.add_argument("--block-size", type=int, required=True, help="tokens a block")
    prep.add_argument("--out", required=True, help="output directory or URL")
    prep.add_argument("--engine", choices=("local", "spark"), default="local",
                      help="local: this process; spark: PySpark (pip install 'maas[spark]')")  # fmt: skip
    prep.add_argument("--master", default="local[*]", help="Spark master URL (default %(default)s)")
    prep.add_argument("--partitions", type=int, default=0, help="Spark partitions (default: Spark's)")
    prep.add_argument("--val-fraction", type=float, default=0.0, help="documents to validation (by hash)")
    prep.add_argument("--test-fraction", type=float, default=0.0, help="documents to test (by hash)")
    prep.add_argument("--seed", type=int, default=0, help="seed of the split (default %(default)s)")
    prep.add_argument("--dedup", choices=("none", "exact", "near"), default="exact",
                      help="exact: identical documents; near: also MinHash LSH near-duplicates")  # fmt: skip
    prep.add_argument("--near-threshold", type=float, default=0.7,
                      help="--dedup near: similarity (word 5-grams) from which documents are duplicates (default %(default)s)")  # fmt: skip
    prep.add_argument("--split-by", choices=("paragraph", "line", "file"), default="paragraph",
                      help="what a document is in a text file (default %(default)s)")  # fmt: skip
    prep.add_argument("--text-field", default="text", help="the text field of JSONL / Parquet rows")
    prep.add_argument("--min-chars", type=int, default=1, help="shorter documents are dropped")
    prep.add_argument("--shard-blocks", type=int, default=0, help="blocks a shard (default: about 64 MiB)")
    prep.add_argument("--json", action="store_true", help="print the manifest")
    show = verbs.add_parser("show", help="a prepared dataset's manifest", description="Tokens, blocks, digest, "
                            "documents per step, the length histogram, top tokens, unigram entropy.")  # fmt: skip
    show.add_argument("url", help="the dataset's directory or URL")
    show.add_argument("--json", action="store_true", help="the whole manifest")
    show.add_argument("--chart", metavar="PNG", help="draw the length histogram to a PNG file")
    for q in (prep, show):
        q.set_defaults(func=run)


def _show(m: dict[str, Any]) -> str:
    docs = m["documents"]
    lines = [
        f"tokens   {m['tokens']:,} in {m['blocks']:,} blocks of {m['block_size']} ({m['dtype']})",
        f"digest   {m['digest']}",
        "splits   " + ", ".join(f"{s} {v['blocks']:,} blocks" for s, v in m["splits"].items()),
        "documents " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in docs.items()),
        f"tokenizer {m['tokenizer']['name']} ({m['tokenizer']['digest'][:19]}...)",
        f"unigram entropy {m['stats']['unigram_entropy_bits']} bits a token "
        f"(perplexity {m['stats']['unigram_perplexity']})",
        "top tokens " + " ".join(repr(t["text"]) for t in m["stats"]["top_tokens"][:10]),
        "documents by length (tokens):",
    ]
    hist = m["stats"]["length_histogram"]
    most = max((h["documents"] for h in hist), default=1) or 1
    for h in hist:
        bar = "#" * round(40 * h["documents"] / most)
        lines.append(f"  {h['min_tokens']:>7}-{h['max_tokens']:<7} {h['documents']:>8,} {bar}")
    return "\n".join(lines)


def _chart(m: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = m["stats"]["length_histogram"]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar([f"{h['min_tokens']}" for h in hist], [h["documents"] for h in hist])
    ax.set_xlabel("document length (tokens, from)")
    ax.set_ylabel("documents")
    ax.set_title(f"{m['tokens']:,} tokens, {m['blocks']:,} blocks")
    fig.tight_layout()
    fig.savefig(path)


def run(args: argparse.Namespace) -> int:
    """Dispatch a `maas data` verb."""
    from maas.data import manifest

    if args.data_verb == "show":
        m = manifest.read(args.url)
        print(json.dumps(m, indent=2) if args.json else _show(m))
        if args.chart:
            _chart(m, args.chart)
            print(f"chart: {args.chart}")
        return 0
    from maas.data.prepare import PrepareOptions, prepare

    options = PrepareOptions(
        tuple(args.sources), args.out, args.tokenizer, args.block_size, args.engine, args.master,
        args.partitions, args.val_fraction, args.test_fraction, args.seed, args.dedup, args.near_threshold,
        args.split_by, args.text_field, args.min_chars, args.shard_blocks,
    )  # fmt: skip
    m = prepare(options)
    print(json.dumps(m, indent=2) if args.json else _show(m))
    return 0
