"""`maas embed MODEL TEXT...`: sentence vectors on the terminal (no server)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from maas.store.builtin import DEFAULT_EMBEDDING


def add_parser(sub: Any) -> None:
    """Register the verb."""
    p = sub.add_parser(
        "embed",
        help="print sentence embeddings",
        description="Embed each TEXT with an encoder model (a registry name, a built-in name such as "
        f"{DEFAULT_EMBEDDING}, or an HF directory) and print one vector per line. Reads lines from "
        "stdin when no TEXT is given.",
    )
    p.add_argument("model", metavar="MODEL", help=f"encoder model (e.g. {DEFAULT_EMBEDDING})")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed (default: lines of stdin)")
    p.add_argument("--json", action="store_true", help='JSON: [{"text": ..., "embedding": [...]}, ...]')
    p.add_argument("--truncate", action="store_true", help="cut inputs longer than the model takes")
    p.add_argument(
        "--batch-size", type=int, default=32, help="sentences per forward pass (default %(default)s)"
    )
    p.add_argument(
        "--weights",
        choices=["auto", "float32"],
        default="auto",
        help="linear weights for small batches: auto = float16 copies (cosine >= 0.99999 with float32), "
        "float32 = float32 everywhere (default %(default)s)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the encoder, embed, print."""
    from maas.engine.embedding.embedder import Embedder
    from maas.errors import InvalidRequestError
    from maas.store.locate import local_path, locate

    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise InvalidRequestError("nothing to embed: give TEXT arguments or lines on stdin")
    found = locate(args.model)
    if found.kind != "embedding":
        raise InvalidRequestError(f"{args.model!r} is a {found.kind} model, not an embedding model")
    emb = Embedder(local_path(found), weights=args.weights, device=args.device)
    vectors = emb.embed_texts(texts, batch_size=max(1, args.batch_size), truncate=args.truncate).tolist()
    if args.json:
        print(json.dumps([{"text": t, "embedding": v} for t, v in zip(texts, vectors, strict=True)]))
    else:
        for v in vectors:
            print(" ".join(f"{x:.6f}" for x in v))
    return 0
