"""Load a decoder LM and its tokenizer from a path: build on meta, load weights once."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from maas.errors import MaasError, ModelFormatError
from maas.formats import ModelFiles, open_model_files
from maas.kernels.quantized import convert, parameter_count, prepare, quantization_spec
from maas.models.architectures import build_decoder
from maas.models.decoder import DecoderLM
from maas.text.chat_template import ChatTemplate
from maas.text.tokenizer import Tokenizer

log = logging.getLogger("maas.loader")


@dataclass
class LoadedLM:
    """A ready decoder model with its tokenizer and chat template."""

    files: ModelFiles
    config: Any
    model: DecoderLM
    tokenizer: Tokenizer
    chat_template: ChatTemplate
    device: torch.device
    dtype: torch.dtype


def pick_device(device: str = "auto", index: int | None = None) -> torch.device:
    """`auto` -> cuda (GPU `index` when given) when present, else cpu; asking for cuda without
    CUDA is an error."""
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda" if index is None else f"cuda:{index}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MaasError(f"device {device!r} was asked for but CUDA is not available here")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` -> bf16 on CUDA (fp16 where bf16 is missing), fp32 on CPU."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise ModelFormatError(f"unknown dtype {dtype!r} (float32, bfloat16, float16, auto)") from None


def load_weights(model: DecoderLM, files: ModelFiles, dtype: torch.dtype, device: torch.device) -> None:
    """Assign tensors from `files` to a meta-device model; fail clearly on missing or odd tensors."""
    wanted = dict(model.state_dict())
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    state: dict[str, torch.Tensor] = {}
    bar = tqdm(
        total=len(wanted),
        desc=f"loading {files.path.name}",
        unit="tensor",
        leave=False,
        disable=not sys.stderr.isatty(),
    )
    for name, tensor in files.iter_tensors():
        bar.update(1)
        if name not in wanted:
            continue
        if tuple(tensor.shape) != tuple(wanted[name].shape):
            raise ModelFormatError(
                f"tensor {name!r} has shape {tuple(tensor.shape)}, the config implies {tuple(wanted[name].shape)}"
            )
        cast = (
            dtype if tensor.is_floating_point() and wanted[name].is_floating_point() else wanted[name].dtype
        )
        state[name] = tensor.to(device=device, dtype=cast).contiguous()
    bar.close()
    if "lm_head.weight" in wanted and "lm_head.weight" not in state and "model.embed_tokens.weight" in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
        tied = True
    missing = sorted(set(wanted) - set(state))
    if missing:
        raise ModelFormatError(
            f"{str(files.path)!r} lacks tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}"
        )
    model.load_state_dict(state, assign=True, strict=True)
    if tied and "lm_head.weight" in wanted:
        model.share_embeddings()
    model.materialize_buffers(device)
    prepare(model)


def load_lm(path: str | Path, device: str = "auto", dtype: str = "auto") -> LoadedLM:
    """Open files, build the model on meta, load weights, build tokenizer and chat template."""
    t0 = time.perf_counter()
    files = open_model_files(path)
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    cfg, model = build_decoder(files.architecture, files.config)
    spec = quantization_spec(files.config)
    if spec is not None:
        convert(model, spec, dt)
    load_weights(model, files, dt, dev)
    model.eval().requires_grad_(False)
    tok = Tokenizer.from_source(files.tokenizer)
    template = ChatTemplate(files.tokenizer.chat_template, tok.bos_token, tok.eos_token)
    log.info(
        "loaded %s (%s%s, %d layers, %.0fM params) on %s/%s in %.1fs",
        files.path.name,
        files.format,
        f", {spec['method']}" if spec else "",
        cfg.num_hidden_layers,
        parameter_count(model) / 1e6,
        dev,
        str(dt).removeprefix("torch."),
        time.perf_counter() - t0,
    )
    return LoadedLM(files, cfg, model, tok, template, dev, dt)
