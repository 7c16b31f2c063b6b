"""Fusing linear layers that read the same input into one wider layer (inference transformation)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def cat_linears(parts: list[Any]) -> nn.Module:
    """One layer whose outputs are `parts`' outputs side by side. Plain nn.Linear layers are copied
    into one; a layer of another type (e.g. a quantized linear) fuses through its `concat` classmethod."""
    first = parts[0]
    if not all(type(p) is nn.Linear for p in parts):
        concat = getattr(type(first), "concat", None)
        if concat is None or any(type(p) is not type(first) for p in parts):
            raise TypeError(f"cannot fuse {', '.join(type(p).__name__ for p in parts)}")
        out: nn.Module = concat(parts)
        return out
    bias = first.bias is not None
    w = first.weight
    fused = nn.Linear(first.in_features, sum(p.out_features for p in parts), bias=bias)
    fused = fused.to(device=w.device, dtype=w.dtype)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([p.weight for p in parts]))
        if bias:
            fused.bias.copy_(torch.cat([p.bias for p in parts]))
    return fused
