"""PyTorch programs a user brings: `torch.export` files (.pt2, the signature is read from the program)
and TorchScript files (.pt, which record no input shapes: their signature comes from a config.json
beside them, written by `maas models import --signature`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from maas.errors import ModelFormatError
from maas.formats.recorded import recorded_signature
from maas.models.families import FILE_FAMILIES
from maas.models.signature import Signature, TensorSpec

_DTYPES = {torch.bool: "BOOL", torch.uint8: "UINT8", torch.int8: "INT8", torch.int16: "INT16",
           torch.int32: "INT32", torch.int64: "INT64", torch.float16: "FP16", torch.float32: "FP32",
           torch.float64: "FP64"}  # fmt: skip
SUFFIXES = {k: v for k, v in FILE_FAMILIES.items() if v in ("torch-export", "torchscript")}


def program_file(path: str | Path) -> Path:
    """The .pt2 / .pt file a path names: the file itself or the one such file in a directory."""
    p = Path(path)
    if p.is_file():
        return p
    found = sorted(f for f in p.iterdir() if f.suffix in SUFFIXES)
    if len(found) != 1:
        raise ModelFormatError(f"{str(p)!r} holds {len(found)} .pt2/.pt files; expected exactly one")
    return found[0]


def _spec(name: str, value: Any, where: Path) -> TensorSpec:
    if not isinstance(value, torch.Tensor) or value.dtype not in _DTYPES:
        raise ModelFormatError(f"{str(where)!r}: {name!r} is not a tensor of a servable datatype")
    dims = tuple(d if isinstance(d, int) else -1 for d in value.shape)  # symbolic (dynamic) sizes: -1
    return TensorSpec(name, _DTYPES[value.dtype], dims, allow_nan=True)


def load_program(path: str | Path) -> tuple[torch.nn.Module, Signature]:
    """The callable module and signature of a .pt2 (torch.export) or .pt (TorchScript) model."""
    p = Path(path)
    f = program_file(p)
    recorded = recorded_signature(p)
    try:
        if f.suffix == ".pt2":
            ep = torch.export.load(str(f))
            module: torch.nn.Module = ep.module()  # a graph already in inference form (no .eval())
        else:
            module = torch.jit.load(str(f), map_location="cpu").eval()
    except Exception as e:  # torch raises many kinds for a file it cannot read
        raise ModelFormatError(f"cannot load the PyTorch program {str(f)!r}: {e}") from None
    if recorded is not None:
        return module, recorded
    if f.suffix != ".pt2":
        raise ModelFormatError(
            f"{str(f)!r} is TorchScript, which records no input shapes: import it with "
            "`maas models import FILE --signature SIGNATURE.json`"
        )
    return module, _export_signature(ep, f)


def program_signature(path: str | Path) -> Signature:
    """A program's signature without keeping the module."""
    return load_program(path)[1]


def _export_signature(ep: Any, f: Path) -> Signature:
    gs = ep.graph_signature
    nodes = {n.name: n for n in ep.graph.nodes}
    inputs = tuple(_spec(name, nodes[name].meta.get("val"), f) for name in gs.user_inputs)
    out_node = next(n for n in ep.graph.nodes if n.op == "output")
    outs = out_node.args[0] if isinstance(out_node.args[0], tuple | list) else (out_node.args[0],)
    outputs = tuple(_spec(f"output_{i}", o.meta.get("val"), f) for i, o in enumerate(outs))
    return Signature(inputs, outputs)
