"""Family name -> model class and config class."""

from __future__ import annotations

from typing import Any

from torch import nn

from maas.errors import UnsupportedModelError
from maas.models.llama import LlamaConfig, LlamaForCausalLM

DECODERS: dict[str, tuple[Any, type[nn.Module]]] = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (LlamaConfig, LlamaForCausalLM),
}


def build_decoder(family: str, hf_config: dict[str, Any]) -> tuple[Any, nn.Module]:
    """Config and an empty (meta-device) decoder LM for a family name."""
    import torch

    if family not in DECODERS:
        raise UnsupportedModelError(f"no decoder architecture for family {family!r}")
    cfg_cls, model_cls = DECODERS[family]
    cfg = cfg_cls.from_hf(hf_config)
    with torch.device("meta"):
        model = model_cls(cfg)
    return cfg, model
