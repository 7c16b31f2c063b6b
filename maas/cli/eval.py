"""`maas eval MODEL`: measure a model's quality and record it on its registry version.

LMs: perplexity over --data. Encoders: cosine of their sentence vectors (the lines of --data) to a
reference encoder's (--reference, default the version it was made from). Classifiers trained by
`maas train` (and their ONNX exports, run on ONNX Runtime): accuracy and loss on the test split their
training recorded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    """Register the verb."""
    p = sub.add_parser(
        "eval",
        help="measure a model's quality (LM perplexity, encoder cosine to a reference, classifier accuracy)",
        description="LMs: sliding-window perplexity over --data (windows of --context tokens, each scoring "
        "up to --stride new ones). Encoders: mean cosine between the model's sentence vectors and "
        "--reference's (default: its parent) over the lines of --data. Classifiers trained by `maas train`: "
        "accuracy and loss on the test split recorded by their training. A registry model gets the result "
        "stored in its metrics under eval.",
    )
    p.add_argument("model", metavar="MODEL", help="a registry name[:tag], a built-in name or a model path")
    p.add_argument(
        "--data", metavar="FILE", help="a UTF-8 text file (LMs and encoders; e.g. wikitext-2 test.txt)"
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="score only the first N tokens (LMs) or lines (encoders)",
    )
    p.add_argument("--context", type=int, default=512, help="LMs: tokens per window (default %(default)s)")
    p.add_argument(
        "--stride", type=int, default=256, help="LMs: new tokens scored per window (default %(default)s)"
    )
    p.add_argument(
        "--reference", metavar="MODEL", help="encoders: the model to compare with (default: the parent)"
    )
    p.add_argument("--json", action="store_true", help='print the result as JSON ({"perplexity": ...}, ...)')
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default %(default)s)")
    p.set_defaults(func=run)


def _text(args: argparse.Namespace, kind: str) -> str:
    from maas.errors import InvalidRequestError

    if args.data is None:
        raise InvalidRequestError(
            f"evaluating {'an LM' if kind == 'llm' else 'an encoder'} needs --data FILE"
        )
    try:
        return Path(args.data).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidRequestError(f"cannot read --data {args.data!r}: {e}") from None


def _perplexity(args: argparse.Namespace, path: Path) -> tuple[dict[str, Any], str]:
    from maas.compress.evaluate import perplexity
    from maas.engine.llm.loader import load_lm
    from maas.errors import InvalidRequestError

    if args.limit is not None and args.limit < 2:
        raise InvalidRequestError("--limit must be at least 2 tokens")
    text = _text(args, "llm")
    r = perplexity(
        load_lm(path, device=args.device, dtype="float32"), text, args.context, args.stride, args.limit
    )
    line = f"perplexity {r.perplexity:.3f} over {r.tokens} tokens (context {r.context}, stride {r.stride})"
    return {**r.as_dict(), "data": Path(args.data).name}, line


def _cosine(args: argparse.Namespace, found: Any, path: Path) -> tuple[dict[str, Any], str]:
    from maas.compress.evaluate import cosine, sentences
    from maas.engine.embedding.embedder import Embedder
    from maas.errors import InvalidRequestError
    from maas.store.locate import local_path, locate

    ref_name = args.reference
    if ref_name is None and found.origin == "registry":
        from maas.store.registry import Registry

        ref_name = Registry().show(found.source).parent
    if ref_name is None:
        raise InvalidRequestError(f"{args.model!r} has no parent to compare with: give --reference MODEL")
    ref = locate(ref_name)
    if ref.kind != "embedding":
        raise InvalidRequestError(f"the reference {ref_name!r} is not an encoder")
    if args.limit is not None and args.limit < 1:
        raise InvalidRequestError("--limit must be at least 1 line")
    texts = sentences(_text(args, "embedding"), args.limit)
    model = Embedder(path, weights="float32", device=args.device)
    reference = Embedder(local_path(ref), weights="float32", device=args.device)
    r = cosine(model.embed_texts, reference.embed_texts, texts, ref_name)
    line = f"cosine to {ref_name}: mean {r.cosine:.5f}, least {r.cosine_min:.5f} over {r.sentences} sentences"
    return {**r.as_dict(), "data": Path(args.data).name}, line


def _accuracy(args: argparse.Namespace, found: Any, path: Path) -> tuple[dict[str, Any], str]:
    from maas.cli.compress_args import load_trained
    from maas.compress.calibration import served_inputs, trained_data
    from maas.compress.evaluate import accuracy, onnx_classifier
    from maas.errors import InvalidRequestError
    from maas.formats.detect import model_format
    from maas.models.exported import load_exported

    if found.origin != "registry":
        raise InvalidRequestError(f"{args.model!r} is not in the registry: its test split is unknown")
    data = trained_data(found.source, load_trained)
    if data.task != "classify":
        raise InvalidRequestError(f"{args.model!r} is not a classifier (its training task is {data.task!r})")
    x, y = data.test.x, data.test.y
    if model_format(path) == "onnx":  # the served graph: raw CSV columns in, standardised inside
        r = accuracy(onnx_classifier(path), served_inputs(data, x), y)
    else:
        r = accuracy(load_exported(path), x, y)
    line = f"accuracy {r.accuracy:.4f}, loss {r.loss:.4f} over {r.examples} test examples"
    return r.as_dict(), line


def run(args: argparse.Namespace) -> int:
    """Load the model, score it, print (and record) the result."""
    from maas.errors import InvalidRequestError
    from maas.formats.detect import model_format
    from maas.store.builtin import ensure_builtins_imported
    from maas.store.locate import local_path, locate

    ensure_builtins_imported()
    found = locate(args.model)
    path = local_path(found)
    if found.kind == "llm":
        result, line = _perplexity(args, path)
    elif found.kind == "embedding":
        result, line = _cosine(args, found, path)
    elif found.kind == "tensor" and path.is_dir() and model_format(path) in ("onnx", "maas"):
        result, line = _accuracy(args, found, path)
    else:
        raise InvalidRequestError(f"{args.model!r} is a {found.kind} model `maas eval` cannot score")
    if found.origin == "registry":
        from maas.store.registry import Registry

        Registry().add_metrics(found.source, {"eval": result})
    print(json.dumps(result) if args.json else line)
    return 0
