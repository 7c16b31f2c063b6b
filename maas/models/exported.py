"""Rebuild a model `maas train` wrote as a `maas-<arch>` directory (config.json + model.safetensors),
and wrap it for serving: inputs as the training data had them, class scores out.

model = load_exported("runs/cnn-digits/model")          # the trained nn.Module, eval mode, CPU
module, sig = load_servable("runs/mlp-wine/model")       # raw CSV columns in (standardised inside)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maas.errors import ModelFormatError
from maas.kernels.quantized import convert, prepare, quantization_spec
from maas.models import zoo
from maas.models.decoder import DecoderLM
from maas.models.families import by_config
from maas.models.signature import Signature, exported_signature


def read_meta(directory: str | Path) -> dict[str, Any]:
    """config.json of an exported directory."""
    p = Path(directory) / "config.json"
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelFormatError(f"cannot read {str(p)!r}: {e}") from None
    if not isinstance(meta, dict):
        raise ModelFormatError(f"{str(p)!r} does not hold a JSON object")
    return meta


def load_exported(directory: str | Path) -> nn.Module:
    """Rebuild a model written by `maas train`'s export (eval mode, CPU)."""
    from safetensors.torch import load_file

    d = Path(directory)
    meta = read_meta(d)
    try:
        state = load_file(str(d / "model.safetensors"))
    except (OSError, ValueError) as e:
        raise ModelFormatError(f"cannot read the weights in {str(d)!r}: {e}") from None
    row = by_config(meta)
    if row is not None and row.kind == "llm":  # an LM `maas train` wrote as an HF directory of its family
        model: nn.Module = row.module_class()(row.config_class().from_hf(meta, row))
        if "lm_head.weight" not in state:
            state["lm_head.weight"] = state["model.embed_tokens.weight"]
    elif "architecture" in meta:
        model = zoo.build(
            meta["architecture"],
            meta.get("params", {}),
            input_shape=tuple(meta["input_shape"]) if "input_shape" in meta else None,
            num_classes=meta.get("num_classes"),
            vocab_size=meta.get("vocab_size"),
        )
    else:
        raise ModelFormatError(f"{str(d)!r} is not a directory written by `maas train` (no architecture)")
    spec = quantization_spec(meta)
    if spec is not None:  # `maas quantize` wrote codes and scales for these layers
        try:
            convert(model, spec)
        except (AttributeError, ValueError) as e:
            raise ModelFormatError(
                f"{str(d)!r}: its quantization_config does not fit the model: {e}"
            ) from None
    try:
        model.load_state_dict(state, assign=spec is not None)
    except RuntimeError as e:
        raise ModelFormatError(f"the weights in {str(d)!r} do not fit its config: {e}") from None
    if spec is not None:
        prepare(model)
    if isinstance(model, DecoderLM) and getattr(model.config, "tie_word_embeddings", False):
        model.share_embeddings()
    return model.eval()


class Standardize(nn.Module):
    """(x - mean) / std with the training split's statistics, in front of a tabular model."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, F) raw columns -> (B, F) standardised."""
        return (x - self.mean) / self.std


def load_servable(directory: str | Path) -> tuple[nn.Module, Signature]:
    """The exported model as served: preprocessing the training data had (CSV standardisation)
    inside the module, and its signature."""
    meta = read_meta(directory)
    sig = exported_signature(meta)
    if sig is None:
        raise ModelFormatError(
            f"{str(directory)!r} has no inputs and outputs recorded (not a servable tensor model)"
        )
    model = load_exported(directory)
    if "standardize" in meta:
        s = meta["standardize"]
        model = nn.Sequential(Standardize(s["mean"], s["std"]), model).eval()
    return model.requires_grad_(False), sig
