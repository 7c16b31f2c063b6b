"""Training from a registered model: an LLM in fp32 (GGUF weights dequantized), optionally with LoRA, or a
classifier maas trained (a pruned copy, say) to train further."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from maas.errors import MaasError
from maas.train.config import TrainConfig
from maas.train.data import Data
from maas.train.lora import add_lora

log = logging.getLogger("maas.train")


def load_base(cfg: TrainConfig, data: Data) -> nn.Module:
    """The base model named by model.base, trainable (all weights, or LoRA adapters only)."""
    from maas.engine.llm.loader import load_lm
    from maas.store.locate import local_path, locate

    base = cfg.model.base or ""
    found = locate(base)
    if found.kind == "tensor":
        return _load_tensor_base(cfg, data, local_path(found))
    if data.task != "lm" or cfg.data.tokenizer != base:
        raise MaasError(f"fine-tuning {base!r} needs text data tokenized with it: set data.tokenizer: {base}")
    lm = load_lm(local_path(found), device="cpu", dtype="float32")
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


def _load_tensor_base(cfg: TrainConfig, data: Data, path: Path) -> nn.Module:
    """A classifier `maas train` wrote (e.g. one `maas prune --structured --channels` made smaller), to train
    further on data of the same shape (the export writes the base's architecture: `architecture`)."""
    from maas.models.exported import load_exported, read_meta

    meta = read_meta(path)
    base = cfg.model.base
    if "architecture" not in meta or meta.get("task") != "classify":
        raise MaasError(f"model.base {base!r} is not a classifier trained by maas")
    if "quantization_config" in meta:
        raise MaasError(f"model.base {base!r} is quantized; train its float parent")
    if cfg.model.lora is not None:
        raise MaasError("model.lora applies to LLM bases")
    if (
        data.task != "classify"
        or list(data.input_shape) != meta.get("input_shape")
        or (data.num_classes != meta.get("num_classes"))
    ):
        raise MaasError(
            f"model.base {base!r} takes inputs {meta.get('input_shape')} into {meta.get('num_classes')} classes; "
            f"the data has {list(data.input_shape)} and {data.num_classes}"
        )
    log.info("base %s: %s %s", base, meta["architecture"], meta.get("params", {}))
    return load_exported(path).train().requires_grad_(True)


def architecture(cfg: TrainConfig) -> tuple[str, dict[str, Any]]:
    """The architecture and parameters of the model a config trains: its own, or its classifier base's."""
    if cfg.model.base is None:
        return cfg.model.arch, cfg.model.params
    from maas.models.exported import read_meta
    from maas.store.locate import local_path, locate

    meta = read_meta(local_path(locate(cfg.model.base)))
    return meta["architecture"], dict(meta.get("params", {}))
