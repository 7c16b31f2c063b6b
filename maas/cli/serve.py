"""`maas serve [MODEL ...]`: serve models over the OpenAI API."""

from __future__ import annotations

import argparse
import re
from typing import Any

from maas.cli.engine_args import add_engine_args, engine_config
from maas.config import get_settings
from maas.store.builtin import DEFAULT_MODELS


def _bytes(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 6GiB or 800MB)")
    unit = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2).upper()]
    return int(float(m.group(1)) * unit)


def add_parser(sub: Any) -> None:
    """Register the verb."""
    s = get_settings()
    p = sub.add_parser(
        "serve",
        help="serve models over HTTP (OpenAI API)",
        description="Serve models behind the OpenAI API. MODEL is a registry name[:tag], a built-in "
        f"name, a .gguf file, or an HF model directory (default: {' and '.join(DEFAULT_MODELS)}). The models named "
        "here load at start-up; any other registry model loads on its first request.",
    )
    p.add_argument(
        "models", nargs="*", metavar="MODEL", help=f"models to serve (default: {' '.join(DEFAULT_MODELS)})"
    )
    p.add_argument("--host", default=s.host, help="address to bind (default %(default)s)")
    p.add_argument("--port", type=int, default=s.port, help="port (default %(default)s)")
    p.add_argument("--served-model-name", default=None, help="API name for the (single) model")
    p.add_argument(
        "--max-loaded-models",
        type=int,
        default=None,
        help="models kept in memory at once; the least recently used idle one is unloaded to make "
        "room (default: 3, or the number of MODELs if more)",
    )
    p.add_argument(
        "--memory-budget",
        type=_bytes,
        default=None,
        help="evict least-recently-used models to keep loaded models under this size (e.g. 6GiB)",
    )
    p.add_argument(
        "--no-registry",
        dest="registry",
        action="store_false",
        help="answer only for the MODELs named here, not for other registry models",
    )
    g = p.add_argument_group("embeddings")
    g.add_argument(
        "--embed-max-batch-size",
        type=int,
        default=64,
        help="sentences per forward pass when batching concurrent requests (default %(default)s)",
    )
    g.add_argument(
        "--embed-max-wait-ms",
        type=float,
        default=1.0,
        help="how long an idle embedder waits for more requests to batch (default %(default)s ms)",
    )
    add_engine_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the models, then serve until interrupted (they load as the server starts)."""
    from maas.errors import InvalidRequestError
    from maas.server.launch import build_pool, serve
    from maas.store.builtin import ensure_builtins_imported

    if args.max_loaded_models is not None and args.max_loaded_models < 1:
        raise InvalidRequestError("--max-loaded-models must be at least 1")
    if args.embed_max_batch_size < 1 or not 0 <= args.embed_max_wait_ms <= 1000:
        raise InvalidRequestError(
            "--embed-max-batch-size must be >= 1 and --embed-max-wait-ms within 0..1000"
        )
    ensure_builtins_imported()
    pool = build_pool(
        args.models or DEFAULT_MODELS,
        engine_config(args),
        served_name=args.served_model_name,
        max_loaded=args.max_loaded_models,
        memory_budget=args.memory_budget,
        use_registry=args.registry,
        embed_batch=args.embed_max_batch_size,
        embed_wait_ms=args.embed_max_wait_ms,
    )
    try:
        pool.preload_sync()
    except BaseException:
        pool.shutdown()  # engines already started stop cleanly before the error is shown
        raise
    serve(pool, args.host, args.port, args.log_level)
    return 0
