"""ONNX model files: find the graph in a path and read its signature (names, datatypes, shapes)."""

from __future__ import annotations

from pathlib import Path

from maas.errors import ModelFormatError
from maas.formats.recorded import recorded_signature
from maas.models.signature import Signature, TensorSpec

# onnx.TensorProto element types -> Open Inference Protocol datatypes.
_ELEM_TYPES = {1: "FP32", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64", 8: "BYTES",
               9: "BOOL", 10: "FP16", 11: "FP64", 12: "UINT32", 13: "UINT64"}  # fmt: skip


def onnx_file(path: str | Path) -> Path:
    """The .onnx file a path names: the file itself or the one .onnx file in a directory."""
    p = Path(path)
    if p.is_file():
        return p
    found = sorted(p.glob("*.onnx"))
    if len(found) != 1:
        raise ModelFormatError(f"{str(p)!r} holds {len(found)} .onnx files; expected exactly one")
    return found[0]


def onnx_signature(path: str | Path) -> Signature:
    """The graph's inputs and outputs (dimensions without a fixed size are -1); a directory's
    config.json `signature` (written by `maas export onnx` or `--signature`: labels, NaN rules)
    wins when present, once its names are checked against the graph's."""
    p = Path(path)
    graph = _graph_signature(onnx_file(p))
    sig = recorded_signature(p)
    if sig is None:
        return graph
    for what, mine, theirs in (("inputs", sig.inputs, graph.inputs), ("outputs", sig.outputs, graph.outputs)):
        if sorted(t.name for t in mine) != sorted(t.name for t in theirs):
            raise ModelFormatError(
                f"{str(p / 'config.json')!r}: the signature's {what} ({', '.join(t.name for t in mine)}) are not the "
                f"graph's ({', '.join(t.name for t in theirs)})"
            )
    return sig


def _graph_signature(f: Path) -> Signature:
    import onnx

    try:
        graph = onnx.load(str(f), load_external_data=False).graph
    except Exception as e:  # protobuf's DecodeError and friends: not an ONNX file
        raise ModelFormatError(f"{str(f)!r} is not a readable ONNX model: {e}") from None
    weights = {i.name for i in graph.initializer}

    def spec(v: object) -> TensorSpec:
        t = v.type.tensor_type  # type: ignore[attr-defined]
        name = v.name  # type: ignore[attr-defined]
        if t.elem_type not in _ELEM_TYPES:
            raise ModelFormatError(
                f"{str(f)!r}: tensor {name!r} has ONNX element type {t.elem_type}, not served"
            )
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        return TensorSpec(name, _ELEM_TYPES[t.elem_type], dims, allow_nan=True)

    return Signature(
        tuple(spec(v) for v in graph.input if v.name not in weights), tuple(spec(v) for v in graph.output)
    )
