"""`maas serve [MODEL ...]`: serve models over the OpenAI API."""

from __future__ import annotations

import argparse
from typing import Any

from maas.cli.engine_args import add_engine_args, engine_config
from maas.config import get_settings
from maas.store.builtin import DEFAULT_LLM


def add_parser(sub: Any) -> None:
    """Register the verb."""
    s = get_settings()
    p = sub.add_parser(
        "serve",
        help="serve models over HTTP (OpenAI API)",
        description="Serve LLMs behind the OpenAI API. MODEL is a built-in name (default "
        f"{DEFAULT_LLM}), a .gguf file, or an HF model directory.",
    )
    p.add_argument("models", nargs="*", metavar="MODEL", help=f"models to serve (default: {DEFAULT_LLM})")
    p.add_argument("--host", default=s.host, help="address to bind (default %(default)s)")
    p.add_argument("--port", type=int, default=s.port, help="port (default %(default)s)")
    p.add_argument("--served-model-name", default=None, help="API name for the (single) model")
    add_engine_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the models, then serve until interrupted."""
    from maas.server.launch import load_llm, serve

    cfg = engine_config(args)
    names = args.models or [DEFAULT_LLM]
    served = [load_llm(n, cfg, args.served_model_name if len(names) == 1 else None) for n in names]
    serve(served, args.host, args.port, args.log_level)
    return 0
