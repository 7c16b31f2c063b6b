"""Compressing tensor models: quantizing `maas train`'s MLP / CNN / RNN directories and their ONNX exports,
and removing a CNN's convolution channels.

    info = quantize_tensor(locate("cnn-digits"), "int8", group_size=None)       # torch: weight-only codes
    info = quantize_tensor(locate("cnn-digits:onnx"), "int8", group_size=None)  # ONNX Runtime's int8
    info = prune_cnn(locate("cnn-digits"), channels=0.5, new_name=None)          # half of every conv's channels

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
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from maas.compress import AUTO_GROUP, DEFAULT_GROUP
from maas.compress.quantize import METHODS
from maas.errors import InvalidRequestError
from maas.formats.detect import model_format
from maas.kernels.quantized import Scheme, eligible, in_features, quantize_weight
from maas.store.locate import Located, local_path
from maas.store.registry import Registry, VersionInfo, parse_ref

log = logging.getLogger("maas.compress")
Calibration = tuple[str, np.ndarray]  # (the graph's input name, rows as the model is served)


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
    path: Path, method: str, group_size: int | None
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, int]]:
    """(config.json, tensors, report) of a quantized `maas-<arch>` directory."""
    from maas.models.exported import load_exported, read_meta

    meta = read_meta(path)
    if "quantization_config" in meta:
        raise InvalidRequestError("the model is quantized already; quantize its float parent instead")
    model = load_exported(path)
    schemes = plan_tensor(model, METHODS[method], group_size)
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
        "method": method,
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
    path: Path, method: str, group_size: int | None, out: Path, calibration: Calibration | None
) -> dict[str, Any]:
    """Write ONNX Runtime's int8 quantization of the graph in `path` to `out` (config.json copied, with a
    record of it); returns a report."""
    import onnx

    from maas.formats.onnx import onnx_file

    if method != "int8":
        raise InvalidRequestError(
            f"ONNX graphs are quantized by ONNX Runtime to int8 (--method int8), not {method}; quantize the "
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
    algorithm = _quantize_graph(src, out / src.name, calibration)
    ops: dict[str, int] = {}
    for node in onnx.load(str(out / src.name)).graph.node:
        if node.op_type in INTEGER_OPS:
            ops[node.op_type] = ops.get(node.op_type, 0) + 1
    if not ops:
        raise InvalidRequestError("ONNX Runtime found no MatMul, Gemm, Conv or LSTM in the graph to quantize")
    activations = "uint8, ranges from calibration rows" if algorithm.endswith("static") else "uint8, dynamic"
    meta["quantization"] = {"tool": algorithm, "weights": "int8 per channel", "activations": activations}
    (out / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    report: dict[str, Any] = {"algorithm": algorithm, "layers": sum(ops.values()), "integer_ops": ops}
    if algorithm.endswith("static") and calibration is not None:
        report["calibration_rows"] = len(calibration[1])
    return report


def quantize_tensor(
    found: Located,
    method: str,
    group_size: int | None,
    new_name: str | None,
    calibration_rows: Callable[[str], np.ndarray | None] | None = None,
) -> VersionInfo:
    """Quantize a tensor model of the registry and store the result as a new version of it;
    `calibration_rows(ref)` gives input rows as the model is served (an ONNX graph's static activation
    ranges are measured on them)."""
    if method not in METHODS:
        raise InvalidRequestError(f"tensor models are quantized to {' or '.join(METHODS)}, not {method}")
    _from_registry(found)
    name, tag = parse_ref(found.source)
    path = local_path(found)
    onnx_graph = model_format(path) == "onnx"
    if group_size == AUTO_GROUP:  # ONNX Runtime's int8 has one scale per output channel
        group_size = None if onnx_graph else DEFAULT_GROUP
    params: dict[str, Any] = {"method": method, "group_size": group_size or "channel"}
    if onnx_graph:
        from maas.formats.onnx import onnx_signature

        x = calibration_rows(found.source) if calibration_rows is not None else None
        rows = None if x is None else (onnx_signature(path).inputs[0].name, x)

        def write(out: Path) -> None:
            params.update(quantize_onnx_dir(path, method, group_size, out, rows))

        ref = new_name or f"{name}:{tag}-{method}"
    else:

        def write(out: Path) -> None:
            config, tensors, report = quantize_torch_dir(path, method, group_size)
            write_torch_dir(out, config, tensors)
            params.update({"algorithm": "rtn", **report})

        ref = new_name or (f"{name}:{method}-g{group_size}" if group_size else f"{name}:{method}-channel")
    info = _store(found, ref, "quantize", params, write)
    log.info("quantized %d layers of %s to %s", params["layers"], found.source, method)
    return info


def _from_registry(found: Located) -> None:
    if found.origin != "registry":
        raise InvalidRequestError(
            f"{found.source!r}: tensor models are compressed from the registry (`maas models import` it first)"
        )


def _store(
    found: Located, ref: str, operation: str, params: dict[str, Any], write: Callable[[Path], None]
) -> VersionInfo:
    """`write` the new model's files into a fresh directory and import it as `ref`, made from `found`."""
    parse_ref(ref)  # a bad name fails before the work
    reg = Registry()
    tmp = Path(tempfile.mkdtemp(prefix="compress-", dir=reg.home))
    try:
        write(tmp)
        return reg.import_path(tmp, ref, parent=found.source, operation=operation, parameters=params)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_torch_dir(out: Path, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """A `maas-<arch>` directory: config.json and model.safetensors."""
    from safetensors.torch import save_file

    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})  # fmt: skip


def prune_cnn(found: Located, channels: float, new_name: str | None) -> VersionInfo:
    """Remove a share of every convolution's channels of a maas CNN (compress/conv_channels.py); the smaller
    model is a new registry version."""
    from maas.compress.conv_channels import prune_conv_channels
    from maas.models.cnn import CNN
    from maas.models.exported import load_exported, read_meta

    _from_registry(found)
    path = local_path(found)
    meta = read_meta(path) if found.kind == "tensor" and path.is_dir() else {}
    if meta.get("architecture") != "cnn" or "quantization_config" in meta:
        raise InvalidRequestError(f"{found.source!r} is not a float maas CNN: --channels prunes those")
    ref = new_name or f"{parse_ref(found.source)[0]}:channels{round(channels * 100)}"
    parse_ref(ref)
    model = load_exported(path)
    assert isinstance(model, CNN)
    before = sum(p.numel() for p in model.parameters())
    kept = prune_conv_channels(model, channels)
    after = sum(p.numel() for p in model.parameters())
    config = {**meta, "params": {**meta.get("params", {}), "channels": kept}}
    config["pruning"] = {"structured": True, "channels": channels}
    params = {"structured": True, "channels": channels, "channels_after": kept, "score": "filter L1 norm",
              "parameters_before": before, "parameters_after": after}  # fmt: skip
    log.info("structured pruning: %d -> %d parameters (channels %s)", before, after, kept)
    return _store(found, ref, "prune", params, lambda out: write_torch_dir(out, config, model.state_dict()))
