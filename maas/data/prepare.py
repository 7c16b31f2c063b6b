"""`maas data prepare`: the driver's side. It lists the sources, loads the tokenizer, hands the plan to an
engine (local or Spark: both call the same step functions) and writes the manifest last."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from maas.data import manifest
from maas.data.clean import CleanOptions
from maas.data.pack import SPLITS, SplitWriter, dtype_for
from maas.data.sources import SPLIT_BY, Chunk, ReadOptions, Source, chunks, digest, list_sources
from maas.data.stats import TokenStats
from maas.errors import InvalidRequestError

log = logging.getLogger("maas.data")

DEDUP = ("none", "exact", "near")
TOKENIZER = "tokenizer.json"  # the exact tokenizer, beside the shards
SHARD_BYTES = 64 << 20


@dataclass(frozen=True)
class PrepareOptions:
    """Everything `maas data prepare` takes."""

    sources: tuple[str, ...]
    out: str
    tokenizer: str
    block_size: int
    engine: str = "local"
    master: str = "local[*]"
    partitions: int = 0  # 0: the engine's default
    val_fraction: float = 0.0
    test_fraction: float = 0.0
    seed: int = 0
    dedup: str = "exact"
    near_threshold: float = 0.7  # --dedup near: estimated Jaccard similarity of word 5-grams
    split_by: str = "paragraph"
    text_field: str = "text"
    min_chars: int = 1
    shard_blocks: int = 0  # 0: shards of about SHARD_BYTES

    def check(self) -> None:
        """Refuse options that cannot be right, before any work."""
        if self.block_size < 2:
            raise InvalidRequestError("--block-size must be at least 2")
        if not 0 <= self.val_fraction < 1 or not 0 <= self.test_fraction < 1:
            raise InvalidRequestError("--val-fraction and --test-fraction must be in [0, 1)")
        if self.val_fraction + self.test_fraction >= 1:
            raise InvalidRequestError("--val-fraction plus --test-fraction leaves nothing to train on")
        if not 0.1 <= self.near_threshold <= 1:
            raise InvalidRequestError("--near-threshold must be in [0.1, 1]")
        if self.dedup not in DEDUP:
            raise InvalidRequestError(f"--dedup must be one of {', '.join(DEDUP)}")
        if self.split_by not in SPLIT_BY:
            raise InvalidRequestError(f"--split-by must be one of {', '.join(SPLIT_BY)}")
        if self.partitions < 0 or self.min_chars < 0 or self.shard_blocks < 0:
            raise InvalidRequestError("--partitions, --min-chars and --shard-blocks cannot be negative")


@dataclass
class Plan:
    """What every engine works from: the sources cut into chunks and the tokenizer as JSON."""

    options: PrepareOptions
    sources: list[Source]
    chunks: list[Chunk]
    read: ReadOptions
    clean: CleanOptions
    tokenizer_json: str
    tokenizer_name: str
    eos_id: int
    vocab_size: int
    max_context: int | None
    tokenizer_config: dict[str, Any] = field(default_factory=dict)  # bos/eos tokens, chat template
    counts: dict[str, int] = field(default_factory=dict)
    fsspec_conf: dict[str, Any] = field(default_factory=dict)  # the driver's fsspec settings, for executors

    @property
    def dtype(self) -> Any:
        return dtype_for(self.vocab_size)

    def writers(self) -> dict[str, SplitWriter]:
        """One writer a split, under the output URL."""
        block, item = self.options.block_size, self.dtype.itemsize
        per_shard = self.options.shard_blocks or max(1, SHARD_BYTES // (block * item))
        return {s: SplitWriter(self.options.out, s, block, self.dtype, per_shard) for s in SPLITS}


def tokenizer_of(ref: str) -> tuple[str, str, int, int, int | None, dict[str, Any]]:
    """(tokenizer JSON, name, EOS id, vocabulary size, the model's context, its bos/eos tokens and chat
    template) of a model name or path, or of a tokenizer.json file."""
    from tokenizers import Tokenizer as HFTokenizer

    from maas.data.tokenizer import model_tokenizer, special_tokens

    p = Path(ref).expanduser()
    if p.is_file() and p.suffix == ".json":
        try:
            hf = HFTokenizer.from_file(str(p))
        except Exception as e:
            raise InvalidRequestError(f"--tokenizer {ref}: not a tokenizer.json ({e})") from None
        eos = hf.token_to_id("</s>") or hf.token_to_id("<|endoftext|>") or 0
        return hf.to_str(), p.name, int(eos), int(hf.get_vocab_size(with_added_tokens=True)), None, {}
    name, tok, context = model_tokenizer(ref)
    eos = tok.eos_token_ids[0] if tok.eos_token_ids else 0
    return tok.hf.to_str(), name, int(eos), int(tok.vocab_size), context, special_tokens(tok)


def make_plan(options: PrepareOptions) -> Plan:
    """List the sources and load the tokenizer (every user mistake found here, before any work)."""
    options.check()
    tok_json, tok_name, eos, vocab, context, tok_config = tokenizer_of(options.tokenizer)
    if context and options.block_size > int(context):
        raise InvalidRequestError(
            f"--block-size {options.block_size} is larger than the model's context ({context})"
        )
    sources = list_sources(list(options.sources))
    read = ReadOptions(options.split_by, options.text_field)
    import fsspec.config

    return Plan(options, sources, chunks(sources, read), read, CleanOptions(options.min_chars), tok_json,
                tok_name, eos, vocab, context, tok_config,
                fsspec_conf={k: dict(v) for k, v in fsspec.config.conf.items()})  # fmt: skip


def inputs_of(plan: Plan) -> dict[str, Any]:
    """What the dataset is made from: options, tokenizer digest, source digests (equal inputs, equal data)."""
    o = asdict(plan.options)
    for k in ("out", "engine", "master", "partitions", "sources"):
        o.pop(k)
    return {
        "options": o,
        "tokenizer": {"name": plan.tokenizer_name, "digest": "sha256:" + _sha(plan.tokenizer_json)},
        "sources": [{"url": s.url, "bytes": s.size, "digest": digest(s)} for s in plan.sources],
    }


def _write_text(url: str, text: str) -> None:
    import fsspec

    with fsspec.open(url, "wb") as f:
        f.write(text.encode("utf-8"))


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def finish(
    plan: Plan, inputs: dict[str, Any], writers: dict[str, SplitWriter], stats: TokenStats, seconds: float
) -> dict[str, Any]:
    """The manifest of the written shards, written last."""
    from maas.data.pack import load_tokenizer

    for w in writers.values():
        w.close()
    if writers["train"].blocks == 0:
        raise InvalidRequestError(
            f"nothing to train on: {writers['train'].tokens_in} training tokens make no block of {plan.options.block_size}"
        )
    tok = load_tokenizer(plan.tokenizer_json)
    _write_text(f"{plan.options.out.rstrip('/')}/{TOKENIZER}", plan.tokenizer_json)
    whole = hashlib.sha256()
    for s in SPLITS:
        whole.update(writers[s].digest().encode())
    m = {
        "format": manifest.FORMAT,
        "block_size": plan.options.block_size,
        "dtype": plan.dtype.name,
        "vocab_size": plan.vocab_size,
        "eos_id": plan.eos_id,
        "tokens": sum(w.blocks for w in writers.values()) * plan.options.block_size,
        "blocks": sum(w.blocks for w in writers.values()),
        "digest": "sha256:" + whole.hexdigest(),
        "splits": {
            s: {
                "blocks": w.blocks,
                "tokens_in": w.tokens_in,
                "digest": "sha256:" + w.digest(),
                "shards": [asdict(sh) for sh in w.shards],
            }
            for s, w in writers.items()
        },  # fmt: skip
        "documents": dict(plan.counts),
        "stats": stats.report(lambda i: tok.id_to_token(i) or ""),
        **inputs,
        "tokenizer_config": plan.tokenizer_config,
        "engine": {
            "name": plan.options.engine,
            "partitions": plan.options.partitions,
            "seconds": round(seconds, 2),
        },
    }
    manifest.write(plan.options.out, m)
    return m


def prepare(options: PrepareOptions) -> dict[str, Any]:
    """Prepare the dataset (or find it already prepared from the same inputs); its manifest."""
    plan = make_plan(options)
    inputs = inputs_of(plan)
    if manifest.exists(options.out):
        old = manifest.read(options.out)
        if {k: old.get(k) for k in inputs} == json.loads(json.dumps(inputs)):
            log.info("%s already holds this dataset", options.out)
            return old
        raise InvalidRequestError(
            f"{options.out} already holds a different dataset (remove it, or choose another --out)"
        )
    t0 = time.perf_counter()
    if options.engine == "spark":
        from maas.data.spark import run
    elif options.engine == "local":
        from maas.data.local import run
    else:
        raise InvalidRequestError("--engine must be local or spark")
    writers, stats = run(plan)
    return finish(plan, inputs, writers, stats, time.perf_counter() - t0)
