"""Checkpoints that store some projections fused (Phi-3's qkv_proj and gate_up_proj) are split back into
the separate tensors the model's modules name, at read time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from maas.errors import ModelFormatError
from maas.models.families import Family


def _sizes(parts: tuple[str, ...], rows: int, config: dict[str, Any]) -> list[int]:
    if len(parts) == 3:  # query, key, value
        heads = int(config["num_attention_heads"])
        kv = int(config.get("num_key_value_heads") or heads)
        hd = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
        return [heads * hd, kv * hd, kv * hd]
    return [rows // len(parts)] * len(parts)  # gate and up: halves


def unfuse(
    row: Family, config: dict[str, Any], tensors: Iterator[tuple[str, Any]]
) -> Iterator[tuple[str, Any]]:
    """`tensors` (torch tensors, or StoredBlocks: anything with .shape and .split) with every fused projection
    (the family's `fused` table) split into its parts."""
    for name, t in tensors:
        prefix, _, kind = name.rpartition(".")  # model.layers.N.self_attn.qkv_proj, weight
        module = prefix.split(".", 3)[-1] if prefix.startswith("model.layers.") else ""
        parts = row.fused.get(module)
        if parts is None:
            yield name, t
            continue
        sizes = _sizes(parts, t.shape[0], config)
        if sum(sizes) != t.shape[0]:
            raise ModelFormatError(f"tensor {name!r} has {t.shape[0]} rows, the config implies {sum(sizes)}")
        layer = prefix[: len(prefix) - len(module)]
        for part, piece in zip(parts, t.split(sizes, dim=0), strict=True):
            yield f"{layer}{part}.{kind}", piece
