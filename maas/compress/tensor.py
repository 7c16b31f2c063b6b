"""Compressing tensor models: quantizing `maas train`'s MLP / CNN / RNN directories and their ONNX exports,
and removing a CNN's convolution channels.

    maas quantize cnn-digits --method int8 --group-size channel     # torch: weight-only codes
    maas quantize cnn-digits:onnx --method int8                     # ONNX Runtime's int8
    config, tensors, report = quantize_torch_dir(path, 4, 32)       # a `maas-<arch>` directory in memory

A `maas-<arch>` directory gets the LLM format (config.json's quantization_config, `qweight` / `scales` /
`mins` per layer) for its linear layers and 2-D convolutions; a layer whose input width the group size does
not divide gets one scale per output channel (a 3x3 convolution over one channel holds 9 weights a filter).
Recurrent layers (nn.LSTM / nn.GRU) stay float there. An ONNX graph is quantized by ONNX Runtime's tools
(int8 weights per output channel, uint8 activations), which is how it serves on ORT: static (QLinearConv,
QGemm; activation ranges measured on rows of the training split its lineage records) for feed-forward graphs,
dynamic (ranges measured per call) for graphs with LSTM / GRU nodes or without training data.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn

from maas.compress import DEFAULT_GROUP
from maas.compress.method import Method, Options, Result, expect
from maas.compress.source import Source
from maas.errors import InvalidRequestError
from maas.formats.detect import model_format
from maas.kernels.quant_codes import Scheme, eligible, in_features, quantize_weight

log = logging.getLogger("maas.compress")
Calibration = tuple[str, np.ndarray]  # (the graph's input name, rows as the model is served)


class Rows(Protocol):
    """Input rows of a registry model as it is served (an ONNX graph's static ranges are measured on them);
    None when none are known."""

    def __call__(self, ref: str) -> np.ndarray | None: ...


@dataclass(frozen=True)
class TensorQuantOptions(Options):
    """Weights sharing one scale (default: 32 for a PyTorch directory, one per channel for an ONNX graph),
    and where calibration rows come from."""

    group_size: int | Literal["channel"] | None = None
    rows: Rows | None = None


def plan_tensor(model: nn.Module, bits: int, group_size: int | None) -> dict[str, Scheme]:
    """{module name: Scheme} for the linear layers and 2-D convolutions of a tensor model; groups that do not
    divide a layer's rows fall back to one scale per output channel (int4 also needs an even row)."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            K = in_features(m)
            for g in (group_size or K, K):
                if eligible(m, Scheme(bits, g)):
                    out[name] = Scheme(bits, g)
                    break
    return out


def quantize_torch_dir(
    path: Path, bits: int, group_size: int | None
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, int]]:
    """(config.json, tensors, report) of a quantized `maas-<arch>` directory."""
    from maas.models.exported import load_exported, read_meta

    meta = read_meta(path)
    if "quantization_config" in meta:
        raise InvalidRequestError("the model is quantized already; quantize its float parent instead")
    model = load_exported(path)
    schemes = plan_tensor(model, bits, group_size)
    if not schemes:
        raise InvalidRequestError("the model has no linear or convolution layer to quantize")
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    for module, scheme in schemes.items():
        w = tensors.pop(f"{module}.weight")
        tensors.update(
            {f"{module}.{k}": v for k, v in quantize_weight(w.reshape(w.shape[0], -1), scheme).items()}
        )
    spec = {
        "quant_method": "maas",
        "method": f"int{bits}",
        "group_size": group_size or "channel",
        "modules": {m: s.as_dict() for m, s in schemes.items()},
    }
    per_channel = [m for m, s in schemes.items() if group_size and s.group_size != group_size]
    kept = [n for n, m in model.named_modules() if isinstance(m, nn.RNNBase)]
    report = {
        "layers": len(schemes),
        "per_channel_fallback": len(per_channel),
        "float_recurrent_layers": len(kept),
    }
    return {**meta, "quantization_config": spec}, tensors, report


RECURRENT_OPS = ("LSTM", "GRU", "RNN")
INTEGER_OPS = ("MatMulInteger", "ConvInteger", "DynamicQuantizeLSTM", "QLinearConv", "QLinearMatMul", "QGemm")


def _quantize_graph(src: Path, dst: Path, rows: Calibration | None) -> str:
    """Run ONNX Runtime's quantizer on `src` -> `dst`; returns the algorithm used: static (QOperator, int8
    weights per channel, uint8 activations with ranges from `rows`) for feed-forward graphs when rows are
    given, else dynamic (activation ranges measured per call; the way ORT runs LSTM / GRU in int8)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    recurrent = any(n.op_type in RECURRENT_OPS for n in onnx.load(str(src)).graph.node)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT logs a line per tensor and advice on the root logger
    try:
        # ORT's pre-processing folds constants: the exporter's Slice / Concat of an LSTM's gate weights become
        # the initializers the quantizer needs (without it the LSTM stays float)
        pre = dst.with_name("preprocessed.onnx")
        quant_pre_process(str(src), str(pre))
        src = pre
        if rows is None or recurrent:
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True)
            algorithm = "onnxruntime-dynamic"
        else:
            name, x = rows

            class Reader(CalibrationDataReader):  # type: ignore[misc]
                def __init__(self) -> None:
                    self.batches = iter([{name: x[i : i + 64]} for i in range(0, len(x), 64)])

                def get_next(self) -> dict[str, Any] | None:
                    return next(self.batches, None)

            quantize_static(src, dst, Reader(), quant_format=QuantFormat.QOperator, per_channel=True,
                            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)  # fmt: skip
            algorithm = "onnxruntime-static"
        pre.unlink()
        return algorithm
    except (RuntimeError, ValueError, onnx.onnx_cpp2py_export.checker.ValidationError) as e:
        raise InvalidRequestError(f"ONNX Runtime could not quantize the graph: {e}") from None
    finally:
        root.setLevel(level)


def quantize_onnx_dir(
    path: Path, bits: int, group_size: int | None, calibration: Calibration | None
) -> tuple[dict[str, Any], dict[str, bytes], dict[str, Any]]:
    """ONNX Runtime's int8 quantization of the graph in `path`: (config.json with a record of it, {graph
    file name: its bytes}, report)."""
    import onnx

    from maas.formats.onnx import onnx_file

    if bits != 8:
        raise InvalidRequestError(
            f"ONNX graphs are quantized by ONNX Runtime to int8 (--method int8), not int{bits}; quantize the "
            "PyTorch version for int4"
        )
    if group_size is not None:
        raise InvalidRequestError(
            "ONNX Runtime's int8 has one scale per output channel: pass --group-size channel"
        )
    src = onnx_file(path)
    meta = json.loads((path / "config.json").read_text()) if (path / "config.json").exists() else {}
    if "quantization" in meta:
        raise InvalidRequestError("the graph is quantized already; quantize its float parent instead")
    with tempfile.TemporaryDirectory(prefix="maas-onnx-") as tmp:
        out = Path(tmp) / src.name
        algorithm = _quantize_graph(src, out, calibration)
        graph = out.read_bytes()
    ops: dict[str, int] = {}
    for node in onnx.load_from_string(graph).graph.node:
        if node.op_type in INTEGER_OPS:
            ops[node.op_type] = ops.get(node.op_type, 0) + 1
    if not ops:
        raise InvalidRequestError("ONNX Runtime found no MatMul, Gemm, Conv or LSTM in the graph to quantize")
    activations = "uint8, ranges from calibration rows" if algorithm.endswith("static") else "uint8, dynamic"
    meta["quantization"] = {"tool": algorithm, "weights": "int8 per channel", "activations": activations}
    report: dict[str, Any] = {"algorithm": algorithm, "layers": sum(ops.values()), "integer_ops": ops}
    if algorithm.endswith("static") and calibration is not None:
        report["calibration_rows"] = len(calibration[1])
    return meta, {src.name: graph}, report


class TensorQuantize(Method):
    """A tensor model maas trained (weight-only codes) or its ONNX export (ONNX Runtime's int8)."""

    def __init__(self, name: str, bits: int):
        about = f"{name} codes of a model maas trained" + (
            "; ONNX graphs: ONNX Runtime's int8" if bits == 8 else " (ONNX graphs: int8 only)"
        )
        super().__init__(name, "quantize", ("tensor",), TensorQuantOptions, about)
        self.bits = bits

    def apply(self, source: Source, options: Options) -> Result:
        """Quantize the PyTorch directory or the ONNX graph."""
        o = expect(options, TensorQuantOptions)
        ref = source.require_registry()
        tag = source.ref[1]
        if model_format(source.path) == "onnx":
            group = None if o.group_size in (None, "channel") else int(o.group_size)
            from maas.formats.onnx import onnx_signature

            x = o.rows(ref) if o.rows is not None else None
            rows = None if x is None else (onnx_signature(source.path).inputs[0].name, x)
            config, files, report = quantize_onnx_dir(source.path, self.bits, group, rows)
            params = {"method": self.name, "group_size": group or "channel", **report}
            log.info("quantized %d layers of %s to %s", report["layers"], ref, self.name)
            return Result(config, {}, params, f"{tag}-{self.name}", files=files)
        group = DEFAULT_GROUP if o.group_size is None else None if o.group_size == "channel" else o.group_size
        config, tensors, counts = quantize_torch_dir(source.path, self.bits, group)
        params = {"method": self.name, "group_size": group or "channel", "algorithm": "rtn", **counts}
        log.info("quantized %d layers of %s to %s", counts["layers"], ref, self.name)
        return Result(config, tensors, params, f"{self.name}-g{group}" if group else f"{self.name}-channel")
