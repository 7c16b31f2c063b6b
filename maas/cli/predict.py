"""`maas predict MODEL --input FILE`: run a tensor model on local inputs (no server), through the same
signature checks and backends as `maas serve`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def add_parser(sub: Any) -> None:
    """Register the verb."""
    p = sub.add_parser(
        "predict",
        help="run a tensor model on inputs from a file",
        description="Run a tensor model (a registry name[:tag], a `maas train` output directory or an .onnx "
        "file) on the inputs in FILE: .npy (the model's one input; one sample without the batch axis is "
        'allowed), or .json (a v2 infer request {"inputs": [...]}, or {"INPUT": nested list, ...}). '
        "Classifiers print, per row, the top class and its score; --json prints every output.",
    )
    p.add_argument("model", metavar="MODEL", help="tensor model (e.g. cnn-digits, cnn-digits:onnx)")
    p.add_argument("--input", "-i", required=True, metavar="FILE", help=".npy or .json inputs")
    p.add_argument("--json", action="store_true", help="print every output as JSON")
    p.add_argument("--backend", choices=["auto", "torch", "onnxruntime"], default="auto",
                   help="auto = onnxruntime for ONNX models, torch otherwise (default %(default)s)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default %(default)s)")
    p.set_defaults(func=run)


def read_inputs(path: Path, sig: Any) -> dict[str, np.ndarray]:
    """Named arrays from a .npy or .json file, fitted to the signature's datatypes and batch axis."""
    from maas.errors import InvalidRequestError
    from maas.models.signature import DATATYPES
    from maas.server.v2.codec import decode_request

    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InvalidRequestError(f"cannot read {str(path)!r}: {e}") from None
    if path.suffix == ".npy":
        if len(sig.inputs) != 1:
            raise InvalidRequestError(f"the model takes {len(sig.inputs)} inputs; give them in a .json file")
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise InvalidRequestError(f"{str(path)!r} is not a readable .npy file: {e}") from None
        arrays = {sig.inputs[0].name: arr}
    elif path.suffix == ".json":
        try:
            doc = json.loads(raw)
        except ValueError as e:
            raise InvalidRequestError(f"{str(path)!r} is not valid JSON: {e}") from None
        if isinstance(doc, dict) and "inputs" in doc:
            return decode_request(raw, None).inputs  # a v2 request: datatypes and shapes as given
        if not isinstance(doc, dict):
            if len(sig.inputs) != 1:
                raise InvalidRequestError('give {"INPUT": values, ...} for a model with several inputs')
            doc = {sig.inputs[0].name: doc}
        arrays = {k: np.asarray(v) for k, v in doc.items()}
    else:
        raise InvalidRequestError(f"{str(path)!r}: give a .npy or .json file")
    out = {}
    for name, a in arrays.items():
        spec = sig.input(name)
        want = DATATYPES[spec.datatype]
        if (
            a.dtype != want
            and a.dtype.kind in "iuf"
            and want.kind in "iuf"
            and (want.kind == "f" or a.dtype.kind != "f")
        ):
            a = a.astype(want)  # numbers of another width (numpy's float64, int64 defaults)
        if a.ndim == len(spec.shape) - 1:
            a = a[None]  # one sample: add the batch axis
        out[name] = a
    return out


def run(args: argparse.Namespace) -> int:
    """Load the model, check and run the inputs, print predictions."""
    from maas.engine.tensor.engine import TensorEngine, TensorOptions
    from maas.errors import InvalidRequestError
    from maas.store.locate import local_path, locate

    found = locate(args.model)
    if found.kind != "tensor":
        raise InvalidRequestError(
            f"{args.model!r} is a {found.kind} model; `maas predict` runs tensor models"
        )
    engine = TensorEngine.from_path(
        str(local_path(found)),
        TensorOptions(max_batch_size=1 << 30, backend=args.backend, device=args.device),
    )
    try:
        sig = engine.signature
        outs = engine.infer_sync(read_inputs(Path(args.input), sig))
    finally:
        engine.shutdown()
    if args.json or sig.labels is None:
        json.dump({k: v.tolist() for k, v in outs.items()}, sys.stdout)
        print()
        return 0
    scores = outs[sig.outputs[0].name]  # (N, classes): the first output holds the class scores
    for i, row in enumerate(scores.reshape(len(scores), -1)):
        k = int(row.argmax())
        print(f"{i}\t{sig.labels[k]}\t{row[k]:.4g}")
    return 0
