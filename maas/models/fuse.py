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
    with torch.device("meta"):  # no initialisation: the parts' values are assigned below
        fused = nn.Linear(first.in_features, sum(p.out_features for p in parts), bias=bias, dtype=w.dtype)
    with torch.no_grad():
        fused.weight = nn.Parameter(torch.cat([p.weight for p in parts]), requires_grad=w.requires_grad)
        if bias:
            fused.bias = nn.Parameter(torch.cat([p.bias for p in parts]), requires_grad=w.requires_grad)
    return fused
