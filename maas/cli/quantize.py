"""`maas quantize MODEL --method METHOD`: a quantized copy as a new registry version."""

from __future__ import annotations

import argparse
from typing import Any

from maas.cli.compress_args import add_common, add_method, calibration_rows, method_formatter, report


def _group_size(text: str) -> int | str:
    if text == "channel":
        return "channel"
    try:
        g = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of weights or 'channel', got {text!r}") from None
    if g < 2:
        raise argparse.ArgumentTypeError("a group holds at least 2 weights")
    return g


def add_parser(sub: Any) -> None:
    """Register the verb."""
    p = sub.add_parser(
        "quantize",
        help="store a quantized copy of a model (LMs, encoders, tensor models)",
        formatter_class=method_formatter("quantize"),
        description="Quantize the weights of every linear layer and vocabulary embedding of an LM or encoder "
        "in groups of --group-size weights, and store the result as a registry version whose parent is MODEL. "
        "4-bit methods keep the token embedding and the LM head at 8 bits unless --include-head. "
        "GGUF Q8_0/Q4_0/Q4_1 weights carry over without loss (group 32). gptq and awq measure the layers' "
        "inputs on --calibration text. Tensor models trained by maas: linear layers and convolutions the same "
        "way (a group size that does not divide a layer's rows gives it one scale per channel); their ONNX "
        "exports through ONNX Runtime's int8 quantizer (one scale per channel; activation ranges from rows of "
        "the training split their lineage records). Serve it, evaluate it or compare it like any other version.",
    )
    p.add_argument("model", metavar="MODEL", help="a registry name[:tag], a built-in name or a model path")
    add_method(p, required=True)
    p.add_argument(
        "--group-size",
        type=_group_size,
        default=None,
        metavar="N|channel",
        help="weights sharing one scale ('channel': one per output row; default 32, ONNX graphs: channel)",
    )
    p.add_argument(
        "--include-head",
        action="store_true",
        help="4-bit methods: round the token embedding and the LM head to 4 bits too (default: 8 bits, groups of 32)",
    )
    add_common(p, "UTF-8 text whose activations the layers are rounded against (gptq, awq)", "<method>-g<N>")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Quantize, store, report."""
    from maas.compress.methods import compress

    info = compress(
        "quantize",
        args.model,
        args.method,
        args.name,
        services={"rows": calibration_rows},
        group_size=args.group_size,
        calibration=args.calibration,
        calibration_tokens=args.calibration_tokens,
        include_head=args.include_head,
    )
    return report(info, "quantize", args)
