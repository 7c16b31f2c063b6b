"""`maas prune MODEL --method magnitude|wanda|2:4`: a pruned copy as a new registry version."""

from __future__ import annotations

import argparse
from typing import Any

from maas.cli.compress_args import add_common, check_common, report


def add_parser(sub: Any) -> None:
    """Register the verb."""
    p = sub.add_parser(
        "prune",
        help="store a copy of a model with a share of its linear weights set to zero",
        description="Zero the lowest-scoring weights of every linear layer in the transformer blocks "
        "(embeddings and the LM head are kept): magnitude (|W| per layer), wanda (|W| x input norm per "
        "output row, needs --calibration text) or 2:4 (2 of every 4 consecutive weights). The result is "
        "stored dense as a registry version whose parent is MODEL: as large and as fast as the original "
        "until a sparse format runs it. --structured --ffn S --heads S removes whole FFN channels and "
        "query heads (the same number in every layer), --structured --channels S a maas CNN's convolution "
        "channels: smaller matrices, faster everywhere.",
    )
    p.add_argument("model", metavar="MODEL", help="a registry name[:tag], a built-in name or a model path")
    p.add_argument("--method", choices=["magnitude", "wanda", "2:4"], help="unstructured / 2:4 pruning")
    p.add_argument(
        "--structured",
        action="store_true",
        help="remove whole FFN channels / attention heads / conv channels instead",
    )
    p.add_argument(
        "--ffn", type=float, default=0.0, metavar="SHARE", help="--structured: FFN channels to remove"
    )
    p.add_argument(
        "--heads", type=float, default=0.0, metavar="SHARE", help="--structured: query heads to remove"
    )
    p.add_argument(
        "--channels",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="--structured: convolution channels to remove (maas CNNs; smallest filters first)",
    )
    p.add_argument("--sparsity", type=float, default=None, help="share of weights to zero (default 0.5)")
    add_common(p, "UTF-8 text whose activations weigh the weights", 16384, "<method>-<percent>")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prune, store, report."""
    from maas.compress.prune import prune
    from maas.errors import InvalidRequestError

    check_common(args)
    if args.structured:
        if args.method or args.sparsity is not None:
            raise InvalidRequestError(
                "--structured takes --ffn / --heads / --channels, not --method / --sparsity"
            )
        if args.channels:
            if args.ffn or args.heads or args.calibration:
                raise InvalidRequestError("--channels (CNNs) goes without --ffn / --heads / --calibration")
            from maas.compress.output import locate_model
            from maas.compress.tensor import prune_cnn

            info = prune_cnn(locate_model(args.model), args.channels, args.name)
            return report(info, "prune", args)
        from maas.compress.prune import prune_structured

        info = prune_structured(
            args.model, args.ffn, args.heads, args.calibration, args.name, args.calibration_tokens
        )
    else:
        if args.method is None or args.ffn or args.heads or args.channels:
            raise InvalidRequestError("give --method (or --structured with --ffn / --heads / --channels)")
        sparsity = 0.5 if args.sparsity is None else args.sparsity
        info = prune(args.model, args.method, sparsity, args.calibration, args.name, args.calibration_tokens)
    return report(info, "prune", args)
