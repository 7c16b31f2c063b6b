"""`maas prune MODEL --method METHOD`: a pruned copy as a new registry version."""

from __future__ import annotations

import argparse
from typing import Any

from maas.cli.compress_args import add_common, add_method, method_formatter, report


def add_parser(sub: Any) -> None:
    """Register the verb."""
    p = sub.add_parser(
        "prune",
        help="store a copy of a model with a share of its weights removed",
        formatter_class=method_formatter("prune"),
        description="Zero the lowest-scoring weights of every linear layer in the transformer blocks "
        "(embeddings and the LM head are kept): magnitude, wanda (needs --calibration text) or 2:4. The result "
        "is stored dense as a registry version whose parent is MODEL: as large and as fast as the original "
        "until a sparse format runs it. --method structured (or --structured) with --ffn S --heads S removes "
        "whole FFN channels and query heads (the same number in every layer), with --channels S a maas CNN's "
        "convolution channels: smaller matrices, faster everywhere.",
    )
    p.add_argument("model", metavar="MODEL", help="a registry name[:tag], a built-in name or a model path")
    add_method(p, required=False)
    p.add_argument("--structured", action="store_true", help="the same as --method structured")
    p.add_argument("--ffn", type=float, metavar="SHARE", help="structured: FFN channels to remove")
    p.add_argument("--heads", type=float, metavar="SHARE", help="structured: query heads to remove")
    p.add_argument(
        "--channels",
        type=float,
        metavar="SHARE",
        help="structured: a maas CNN's convolution channels to remove",
    )
    p.add_argument("--sparsity", type=float, default=None, help="share of weights to zero (default 0.5)")
    add_common(p, "UTF-8 text whose activations weigh the weights", "<method>-<percent>")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prune, store, report."""
    from maas.compress.methods import compress
    from maas.errors import InvalidRequestError

    if args.structured and args.method not in (None, "structured"):
        raise InvalidRequestError("--structured is --method structured: give one or the other")
    method = "structured" if args.structured else args.method
    if method is None:
        raise InvalidRequestError("give --method (or --structured with --ffn / --heads / --channels)")
    info = compress(
        "prune",
        args.model,
        method,
        args.name,
        sparsity=args.sparsity,
        ffn=args.ffn,
        heads=args.heads,
        channels=args.channels,
        calibration=args.calibration,
        calibration_tokens=args.calibration_tokens,
    )
    return report(info, "prune", args)
