"""`maas export onnx MODEL`: write a registered tensor model as ONNX and register it as a new version."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    """Register `maas export` and its formats."""
    p = sub.add_parser("export", help="export a model to another format (onnx)",
                       description="Export registered models to other formats.")  # fmt: skip
    fmts = p.add_subparsers(dest="export_format", metavar="FORMAT", required=True)
    o = fmts.add_parser(
        "onnx",
        help="export a tensor model to ONNX (dynamic batch axis), check it, register it",
        description="Export a tensor model `maas train` made (MLP, CNN, RNN; CSV standardisation included) "
        "to an ONNX graph with a dynamic batch axis (torch.onnx with onnxscript), check ONNX Runtime's "
        "outputs against torch's, and register it as NAME:TAG with the source as its parent. `maas serve "
        "NAME:TAG` then runs it on ONNX Runtime.",
    )
    o.add_argument("model", metavar="MODEL", help="registry name[:tag] of the tensor model")
    o.add_argument("--tag", default="onnx", help="tag of the new version (default %(default)s)")
    o.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    o.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, check, register; print what was made."""
    from maas.store.builtin import ensure_builtins_imported
    from maas.train.onnx_export import export_onnx

    ensure_builtins_imported()
    done = export_onnx(args.model, args.tag, args.opset)
    i = done.info
    print(f"exported {i.parent} -> {i.name}:{i.tag} (version {i.version}, opset {done.opset}, "
          f"max |onnx - torch| = {done.max_abs_diff:.2g})")  # fmt: skip
    return 0
