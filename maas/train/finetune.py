"""Fine-tuning a registered LLM: load it in fp32 (GGUF weights dequantized), optionally with LoRA."""

from __future__ import annotations

import logging

from torch import nn

from maas.errors import MaasError
from maas.train.config import TrainConfig
from maas.train.data import Data
from maas.train.lora import add_lora

log = logging.getLogger("maas.train")


def load_base(cfg: TrainConfig, data: Data) -> nn.Module:
    """The base model named by model.base, trainable (all weights, or LoRA adapters only)."""
    from maas.engine.loader import load_lm
    from maas.store.locate import resolve

    base = cfg.model.base or ""
    if data.task != "lm" or cfg.data.tokenizer != base:
        raise MaasError(f"fine-tuning {base!r} needs text data tokenized with it: set data.tokenizer: {base}")
    lm = load_lm(resolve(base)[1], device="cpu", dtype="float32")
    model = lm.model
    model.train().requires_grad_(True)
    if cfg.model.lora is not None:
        lo = dict(cfg.model.lora)
        n = add_lora(model, int(lo.get("rank", 8)), float(lo.get("alpha", 16)), lo.get("targets"))
        if n == 0:
            raise MaasError(f"model.lora.targets {lo.get('targets')} matched no linear layer of {base!r}")
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info("LoRA on %d layers: %d trainable parameters", n, trainable)
    return model
