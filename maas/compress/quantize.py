"""Weight-only quantization (round to nearest), offline: a float model -> int8 / int4 registry version.

    maas quantize smollm2-135m-instruct --method int4 --group-size 32
    python -c "from maas.compress.quantize import quantize; print(quantize('all-minilm-l6-v2', 'int8'))"

Every nn.Linear and vocabulary nn.Embedding whose shape allows it is quantized (the LM head included; an embedding
tied to it reads the head's codes). GGUF Q8_0 / Q4_0 / Q4_1 tensors carry over without loss when the method and group
size match them (int8 or int4, group 32). Loading the result is kernels/quantized.py's `convert`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from maas.compress import AUTO_GROUP, DEFAULT_GROUP
from maas.compress.gptq import gptq
from maas.compress.model import input_stats, load_float, skeleton
from maas.compress.output import Source, locate_model, open_source, read_calibration, save_version
from maas.errors import InvalidRequestError
from maas.formats import ModelFiles
from maas.kernels.quantized import Scheme, eligible, in_features, pack_nibbles, quantize_weight
from maas.store.registry import VersionInfo, parse_ref

log = logging.getLogger("maas.compress")
METHODS = {"int8": 8, "int4": 4}
FLOATS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
VOCAB_ROWS = 1024  # embeddings with this many rows or more are quantized


def plan(model: nn.Module, bits: int, group_size: int | None) -> dict[str, Scheme]:
    """{module name: Scheme} for every linear layer and vocabulary embedding the scheme fits (group_size
    None = per channel); small tables (positions, token types) stay float."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Embedding) and m.num_embeddings >= VOCAB_ROWS):
            scheme = Scheme(bits, group_size or in_features(m))
            if eligible(m, scheme):
                out[name] = scheme
    return out


def _lossless(
    files: ModelFiles, schemes: dict[str, Scheme], alias: dict[str, str]
) -> dict[str, dict[str, torch.Tensor]]:
    """Stored tensors for the layers whose GGUF blocks are already in the asked format (`alias`: a
    tensor's module -> the layer it is quantized as, e.g. a tied embedding -> the head)."""
    if files.format != "gguf":
        return {}
    from maas.formats.gguf import quantized_blocks

    out = {}
    for name, bits, codes, scales, mins in quantized_blocks(files.path):
        module = name.removesuffix(".weight")
        module = alias.get(module, module)
        s = schemes.get(module)
        if s is None or s.bits != bits or s.group_size != 32:
            continue
        q = torch.from_numpy(codes)
        stored = {"qweight": q if bits == 8 else pack_nibbles(q), "scales": torch.from_numpy(scales)}
        if mins is not None:
            stored["mins"] = torch.from_numpy(mins)
        out[module] = stored
    return out


def quantize_files(
    files: ModelFiles,
    method: str,
    group_size: int | None,
    hessians: Callable[[set[str]], dict[str, torch.Tensor]] | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """(config.json, tensors, report) of the quantized model: round to nearest, or GPTQ for the linear
    layers `hessians(names)` gives the sum of x x^T of the inputs of (on calibration text)."""
    if method not in METHODS and method not in FLOATS:
        raise InvalidRequestError(f"unknown method {method!r} (choose from {', '.join([*METHODS, *FLOATS])})")
    if "quantization_config" in files.config:
        raise InvalidRequestError("the model is quantized already; quantize its float parent instead")
    model, prefix = skeleton(files)
    wanted = set(model.state_dict())
    if method in FLOATS:  # every tensor in one float type (a GGUF's blocks dequantized)
        cast = {n: t.to(FLOATS[method]) for n, t in files.iter_tensors() if n.removeprefix(prefix) in wanted}
        return dict(files.config), cast, {"layers": 0, "lossless_from_gguf": 0}
    schemes = plan(model, METHODS[method], group_size)
    if not schemes:
        raise InvalidRequestError(
            f"no layer fits groups of {group_size} weights (each group must divide a layer's input width)"
        )
    tensors: dict[str, torch.Tensor] = {}
    for name, t in files.iter_tensors():
        name = name.removeprefix(prefix)
        if name in wanted:
            tensors[name] = t
    tied = "lm_head" in schemes and "lm_head.weight" not in tensors and "model.embed_tokens.weight" in tensors
    if tied:  # the head reads the embedding: quantize it once, as the head
        tensors["lm_head.weight"] = tensors.pop("model.embed_tokens.weight")
        schemes.pop("model.embed_tokens", None)
    schemes = {m: s for m, s in schemes.items() if f"{m}.weight" in tensors}
    exact = _lossless(files, schemes, {"model.embed_tokens": "lm_head"} if tied else {})
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    H = hessians({m for m in schemes if m in linears and m not in exact}) if hessians is not None else None
    bar = tqdm(schemes.items(), desc=f"quantizing to {method}", unit="layer", disable=not sys.stderr.isatty())
    for module, scheme in bar:
        w = tensors.pop(f"{module}.weight")
        if module in exact:
            stored = exact[module]
        elif H is not None and module in H:
            stored = gptq(w, H.pop(module), scheme)
        else:
            stored = quantize_weight(w, scheme)
        tensors.update({f"{module}.{k}": v for k, v in stored.items()})
    spec: dict[str, Any] = {
        "quant_method": "maas",
        "method": method,
        "group_size": group_size or "channel",
        "modules": {m: s.as_dict() for m, s in schemes.items()},
    }
    if tied:
        spec["tied_embedding"] = {"head": "lm_head", "embedding": "model.embed_tokens"}
    config = {**files.config, "quantization_config": spec}
    report = {"layers": len(schemes), "lossless_from_gguf": len([m for m in schemes if m in exact])}
    if H is not None:
        report["gptq_layers"] = len([m for m in schemes if m in linears and m not in exact])
    return config, tensors, report


def quantize(
    name: str,
    method: str,
    group_size: int | None = DEFAULT_GROUP,
    new_name: str | None = None,
    calibration: str | Path | None = None,
    tokens: int = 65536,
    tensor_rows: Callable[[str], Any] | None = None,
) -> VersionInfo:
    """Quantize a model (registry ref, built-in name or path) and store the result as a registry version;
    with `calibration` text, linear layers are rounded by GPTQ against their inputs on it. Tensor models go to
    compress/tensor.py (`tensor_rows(ref)`: input rows as served, for ONNX Runtime's static ranges)."""
    if new_name is not None:
        parse_ref(new_name)  # a bad name fails before the work
    if method in FLOATS and calibration is not None:
        raise InvalidRequestError(f"{method} rounds nothing to calibrate: drop --calibration")
    found = locate_model(name)
    if found.kind == "tensor":
        if calibration is not None:
            raise InvalidRequestError("tensor models are rounded to nearest: drop --calibration")
        from maas.compress.tensor import quantize_tensor

        return quantize_tensor(found, method, group_size, new_name, tensor_rows)
    if group_size == AUTO_GROUP:
        group_size = DEFAULT_GROUP
    text, calibrated = read_calibration(calibration, tokens)
    source: Source = open_source(name)

    def hessians(names: set[str]) -> dict[str, torch.Tensor]:
        assert text is not None
        return input_stats(load_float(source.files), source.files, text, tokens, outer=True, only=names)

    config, tensors, report = quantize_files(
        source.files, method, group_size, hessians if text is not None else None
    )
    params: dict[str, Any] = {"method": method}
    if method in FLOATS:
        suffix = method
    else:
        suffix = f"{method}-g{group_size}" if group_size else f"{method}-channel"
        suffix += "-gptq" if text is not None else ""
        params |= {"group_size": group_size or "channel",
                  "algorithm": "gptq" if text is not None else "rtn", **report, **calibrated}  # fmt: skip
    log.info("quantized %d layers to %s (%d carried over from GGUF blocks)", report["layers"], method,
             report["lossless_from_gguf"])  # fmt: skip
    return save_version(source, config, tensors, "quantize", params, new_name, suffix)
