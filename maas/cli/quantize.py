"""`maas quantize MODEL --method int8|int4`: a weight-only quantized copy as a new registry version."""

from __future__ import annotations

import argparse
from typing import Any

from maas.cli.compress_args import add_common, check_common, report
from maas.compress import AUTO_GROUP


def _group_size(text: str) -> int | None:
    if text == "channel":
        return None
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
        help="store an int8 / int4 quantized copy of a model (LMs, encoders, tensor models)",
        description="Round every linear layer and vocabulary embedding of an LM or encoder to int8 "
        "(symmetric) or int4 (scale + min) in groups of --group-size weights, and store the result as a "
        "registry version whose parent is MODEL. GGUF Q8_0/Q4_0/Q4_1 weights carry over without loss "
        "(group 32). With --calibration text, layers are rounded by GPTQ (error spread over the columns not "
        "yet rounded, weighted by the layer's inputs) instead of to nearest. Tensor models trained by maas: "
        "linear layers and convolutions the same way (a group size that does not divide a layer's rows gives "
        "it one scale per channel); their ONNX exports through ONNX Runtime's int8 quantizer (--group-size "
        "channel; activation ranges from 256 training rows). Serve it, evaluate it or compare it like any "
        "other version.",
    )
    p.add_argument("model", metavar="MODEL", help="a registry name[:tag], a built-in name or a model path")
    p.add_argument(
        "--method",
        required=True,
        choices=["int8", "int4", "float16", "bfloat16", "float32"],
        help="int8 / int4 codes, or every tensor in one float type (e.g. a GGUF dequantized)",
    )
    p.add_argument(
        "--group-size",
        type=_group_size,
        default=AUTO_GROUP,
        metavar="N|channel",
        help="weights sharing one scale ('channel': one per output row; default 32, ONNX graphs: channel)",
    )
    add_common(
        p,
        "UTF-8 text: round linear layers by GPTQ against their inputs on it (default: round to nearest)",
        65536,
        "<method>-g<N>",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Quantize, store, report."""
    from maas.compress.quantize import quantize

    check_common(args)
    info = quantize(
        args.model,
        args.method,
        args.group_size,
        args.name,
        args.calibration,
        args.calibration_tokens,
        tensor_rows=training_rows,
    )
    return report(info, "quantize", args)


def training_rows(ref: str, n: int = 256) -> Any:
    """The first `n` rows of the training split `ref`'s lineage records, as the served model takes them
    (float32 numpy); None when no ancestor was trained by maas."""
    from maas.cli.eval import served_inputs, trained_data
    from maas.errors import InvalidRequestError

    try:
        data = trained_data(ref)
    except InvalidRequestError:
        return None
    return served_inputs(data, data.train.x[:n]).float().numpy()
