"""A trained model on disk and in the registry.

Transformer LMs are written as HF Llama directories (config.json, model.safetensors,
tokenizer.json, tokenizer_config.json): the serving engine loads them like any HF model, so a
trained LM is servable by name at once. The other models are written as `maas-<arch>`
directories (config.json with the architecture and its parameters, model.safetensors) that
`maas.models.exported.load_exported` rebuilds (and `load_servable` serves).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maas.models.llama import LlamaForCausalLM
from maas.models.signature import exported_signature
from maas.train.config import TrainConfig
from maas.train.data import EOS, Data


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _tensors(model: nn.Module, drop: set[str] = frozenset()) -> dict[str, torch.Tensor]:  # type: ignore[assignment]
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k not in drop}


def export_model(model: nn.Module, cfg: TrainConfig, data: Data, directory: Path) -> Path:
    """Write `model` (trained on `data` per `cfg`) as a loadable directory; returns it."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*"):
        if old.is_file():
            old.unlink()
    if isinstance(model, LlamaForCausalLM):
        c = model.config
        tied = c.tie_word_embeddings
        _write_json(
            directory / "config.json", {**c.to_hf(), "eos_token_id": data.eos_id, "torch_dtype": "float32"}
        )
        save_file(
            _tensors(model, {"lm_head.weight"} if tied else set()), str(directory / "model.safetensors")
        )
        tok = data.tokenizer
        if tok is not None:
            (directory / "tokenizer.json").write_text(tok.to_str(), encoding="utf-8")
            eos = tok.id_to_token(data.eos_id) if data.eos_id is not None else EOS
            tc = {"eos_token": eos, "bos_token": None, "add_bos_token": False}
            tc.update(data.info.get("tokenizer_config", {}))  # a fine-tuned model keeps its base's
            tc["model_max_length"] = c.max_position_embeddings
            _write_json(directory / "tokenizer_config.json", tc)
            _write_json(directory / "generation_config.json", {"eos_token_id": data.eos_id})
        return directory
    from maas.train.finetune import architecture

    arch, params = architecture(cfg)
    meta: dict[str, Any] = {
        "model_type": f"maas-{arch}",
        "architecture": arch,
        "params": params,
        "task": data.task,
    }
    if data.task == "classify":
        meta.update(input_shape=list(data.input_shape), num_classes=data.num_classes, labels=data.labels)
        if "standardize" in data.info:
            meta["standardize"] = data.info["standardize"]
    else:
        meta["vocab_size"] = data.info.get("vocab_size")
        if data.tokenizer is not None:
            (directory / "tokenizer.json").write_text(data.tokenizer.to_str(), encoding="utf-8")
    sig = exported_signature(meta)  # what the served model takes and gives (the registry records it)
    if sig is not None:
        meta["signature"] = sig.as_dict()
    _write_json(directory / "config.json", meta)
    save_file(_tensors(model), str(directory / "model.safetensors"))
    return directory


def register(directory: Path, cfg: TrainConfig, data: Data, metrics: dict[str, float], steps: int) -> Any:
    """Import the exported model as `name:tag` with its lineage; returns the VersionInfo."""
    from maas.errors import InvalidRequestError, ModelNotFoundError
    from maas.store.registry import Registry, parse_ref

    reg = Registry()
    parent = None
    origin = cfg.model.base or cfg.distill.teacher
    if origin:  # linked when the base / teacher is in the registry (a path or built-in is named only)
        try:
            info = reg.show(origin)
            parent = f"{info.name}:{info.tag}"
        except (ModelNotFoundError, InvalidRequestError):
            parent = None
    parameters = None
    if cfg.distill.teacher:
        parameters = {"teacher": cfg.distill.teacher, "temperature": cfg.distill.temperature,
                      "alpha": cfg.distill.alpha, "data_digest": data.digest, "steps": steps}  # fmt: skip
    lineage = {
        "config": cfg.as_dict(),
        "config_yaml": cfg.source,
        "base_dir": cfg.base_dir,  # relative data paths in the YAML are read from here
        "data_digest": data.digest,
        "parent": cfg.model.base,
        "steps": steps,
    }
    name, tag = parse_ref(f"{cfg.name}:{cfg.output.tag}")
    return reg.import_path(
        directory,
        f"{name}:{tag}",
        parent=parent,
        operation="distill" if cfg.distill.teacher else "train",
        metrics={**metrics, "lineage": lineage},
        parameters=parameters,
    )
