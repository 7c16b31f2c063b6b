"""`maas eval MODEL --data FILE`: measure a model's quality (perplexity for LMs) and record it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    """Register the verb."""
    p = sub.add_parser(
        "eval",
        help="measure a model's quality (perplexity of an LM over a text file)",
        description="Sliding-window perplexity of a decoder LM (a registry name[:tag], a built-in name, a "
        ".gguf file or an HF directory) over a text file: windows of --context tokens, each scoring up to "
        "--stride new tokens. A registry model gets the result stored in its metrics under eval.",
    )
    p.add_argument("model", metavar="MODEL", help="the LM to evaluate (e.g. smollm2-135m-instruct)")
    p.add_argument(
        "--data", required=True, metavar="FILE", help="a UTF-8 text file (e.g. wikitext-2 test.txt)"
    )
    p.add_argument("--limit", type=int, default=None, metavar="N", help="score only the first N tokens")
    p.add_argument("--context", type=int, default=512, help="tokens per window (default %(default)s)")
    p.add_argument(
        "--stride", type=int, default=256, help="new tokens scored per window (default %(default)s)"
    )
    p.add_argument("--json", action="store_true", help='print {"perplexity": ..., "tokens": ..., ...}')
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the LM in float32, score the file, print (and record) the perplexity."""
    from maas.compress.evaluate import perplexity
    from maas.engine.loader import load_lm
    from maas.errors import InvalidRequestError
    from maas.store.builtin import ensure_builtins_imported
    from maas.store.locate import local_path, locate

    ensure_builtins_imported()
    found = locate(args.model)
    if found.kind != "llm":
        article = "an" if found.kind[0] in "aeiou" else "a"
        raise InvalidRequestError(
            f"{args.model!r} is {article} {found.kind} model; `maas eval` measures LMs so far"
        )
    if args.limit is not None and args.limit < 2:
        raise InvalidRequestError("--limit must be at least 2 tokens")
    try:
        text = Path(args.data).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidRequestError(f"cannot read --data {args.data!r}: {e}") from None
    lm = load_lm(local_path(found), device=args.device, dtype="float32")
    r = perplexity(lm, text, args.context, args.stride, args.limit)
    result = {**r.as_dict(), "data": Path(args.data).name}
    if found.origin == "registry":
        from maas.store.registry import Registry

        Registry().add_metrics(found.source, {"eval": result})
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"perplexity {r.perplexity:.3f} over {r.tokens} tokens (context {r.context}, stride {r.stride})"
        )
    return 0
