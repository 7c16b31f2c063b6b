"""Load a decoder LM and its tokenizer from a path: build on meta, load weights once."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from maas.engine.device import pick_device
from maas.errors import MaasError, ModelFormatError
from maas.formats import ModelFiles, open_model_files
from maas.formats.base import StoredBlocks
from maas.kernels.blocks import BlockEmbedding, BlockLinear
from maas.kernels.quantized import convert, parameter_count, prepare, quantization_spec
from maas.models.architectures import build_decoder
from maas.models.decoder import DecoderLM
from maas.models.llama import RMSNorm
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


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` -> bf16 on CUDA (fp16 where bf16 is missing), fp32 on CPU."""
    if dtype == "auto":
        if device.type == "cuda":
            with torch.cuda.device(device):  # the GPU asked for; bf16 only where it is native (not emulated)
                native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
            return torch.bfloat16 if native_bf16 else torch.float16
        return torch.float32
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ModelFormatError(f"unknown dtype {dtype!r} (float32, bfloat16, float16, auto)") from None


def pick_kv_dtype(kv_dtype: str) -> torch.dtype | None:
    """The KV cache's dtype asked for; None for `auto` (the model runner decides: float16 where the native
    decoder runs, the model's dtype elsewhere)."""
    if kv_dtype == "auto":
        return None
    try:
        return DTYPES[kv_dtype]
    except KeyError:
        raise MaasError(f"unknown KV-cache dtype {kv_dtype!r} (auto, float32, float16, bfloat16)") from None


def load_weights(
    model: DecoderLM, files: ModelFiles, dtype: torch.dtype, device: torch.device, blocks: bool = False
) -> None:
    """Assign tensors from `files` to a meta-device model; fail clearly on missing or odd tensors. With
    `blocks`, weights a GGUF file stores in a block format stay in it (BlockLinear / BlockEmbedding)."""
    keep = blocks and device.type == "cpu" and dtype == torch.float32
    tensors = (files.iter_stored if keep and files.iter_stored else files.iter_tensors)()
    wanted = dict(model.state_dict())
    # norm scales stay float32 in a bf16 / fp16 model (Gemma 3's 1 + w near 1 would lose its last digits)
    norms = {f"{n}.weight" for n, mod in model.named_modules() if isinstance(mod, RMSNorm)}
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    state: dict[str, torch.Tensor] = {}
    kept: dict[str, StoredBlocks] = {}
    bar = tqdm(
        total=len(wanted),
        desc=f"loading {files.path.name}",
        unit="tensor",
        leave=False,
        disable=not sys.stderr.isatty(),
    )
    for name, tensor in tensors:
        bar.update(1)
        if name not in wanted:
            continue
        if tuple(tensor.shape) != tuple(wanted[name].shape):
            raise ModelFormatError(
                f"tensor {name!r} has shape {tuple(tensor.shape)}, the config implies {tuple(wanted[name].shape)}"
            )
        if isinstance(tensor, StoredBlocks):
            kept[name.removesuffix(".weight")] = tensor
            continue
        floating = tensor.is_floating_point() and wanted[name].is_floating_point()
        cast = (torch.float32 if name in norms else dtype) if floating else wanted[name].dtype
        state[name] = tensor.to(device=device, dtype=cast).contiguous()
    bar.close()
    if "lm_head.weight" in wanted and "lm_head.weight" not in state and "lm_head" not in kept:
        if "model.embed_tokens" in kept:
            kept["lm_head"] = kept["model.embed_tokens"]
            tied = True
        elif "model.embed_tokens.weight" in state:
            state["lm_head.weight"] = state["model.embed_tokens.weight"]
            tied = True
    state.update(_swap_in_blocks(model, kept, dtype, tied))
    wanted = dict(model.state_dict())
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


def _swap_in_blocks(
    model: DecoderLM, kept: dict[str, StoredBlocks], dtype: torch.dtype, tied: bool
) -> dict[str, torch.Tensor]:
    """Replace the modules whose weights stay in block formats; return their state entries. A tied
    embedding reads the output projection's rows."""
    state: dict[str, torch.Tensor] = {}
    for name, blk in kept.items():
        old = model.get_submodule(name)
        parent, _, leaf = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        new: nn.Module
        if isinstance(old, nn.Linear):
            bias = None if old.bias is None else torch.empty(old.out_features, device="meta")
            new = BlockLinear(blk.raw, blk.fmt, blk.shape[1], bias)
            state[f"{name}.blocks"] = blk.raw
        elif isinstance(old, nn.Embedding):
            if tied and "lm_head" in kept and kept["lm_head"] is blk:
                continue  # set up with the head below
            new = BlockEmbedding(BlockLinear(blk.raw, blk.fmt, blk.shape[1]), dtype)
            state[f"{name}.table.blocks"] = blk.raw
        else:
            raise ModelFormatError(
                f"{name!r} is a {type(old).__name__}; block formats hold linear layers only"
            )
        setattr(owner, leaf, new)
    if tied and "lm_head" in kept:
        head = model.get_submodule("lm_head")
        assert isinstance(head, BlockLinear)
        model.model.embed_tokens = BlockEmbedding(head, dtype, tied=True)  # type: ignore[union-attr]
    return state


def load_lm(path: str | Path, device: str = "auto", dtype: str = "auto", blocks: bool = False) -> LoadedLM:
    """Open files, build the model on meta, load weights, build tokenizer and chat template. `blocks`: a
    GGUF file's block-format weights stay as stored and run on the block kernels (CPU, float32)."""
    t0 = time.perf_counter()
    files = open_model_files(path)
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    cfg, model = build_decoder(files.architecture, files.config)
    spec = quantization_spec(files.config)
    if spec is not None:
        convert(model, spec, dt)
    load_weights(model, files, dt, dev, blocks)
    model.eval().requires_grad_(False)
    tok = Tokenizer.from_source(files.tokenizer)
    template = ChatTemplate(files.tokenizer.chat_template, tok.bos_token, tok.eos_token)
    files.tokenizer.gguf_fields = None  # the vocabulary as Python objects, no longer needed
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
