"""Rotary position embeddings (rotate-half layout, as HF checkpoints hold Q/K rows): inverse frequencies
with Llama 3 or linear scaling, the cos / sin tables at given positions.

    cos, sin = rope_tables(torch.arange(8), rope_inv_freq(cfg), torch.float32)   # (8, head_dim) each
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from maas.models.llama import LlamaConfig


def rope_inv_freq(cfg: LlamaConfig) -> torch.Tensor:
    """Inverse frequencies (head_dim/2,), with Llama-3 or linear scaling when the config asks."""
    d = cfg.head_dim  # on the CPU even while a model is built on the meta device (where arange's meta kernel
    # imports torch._dynamo and sympy into the process, for nothing)
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64, device="cpu") / d))
    sc = dict(cfg.rope_scaling or ())
    kind = sc.get("rope_type") or sc.get("type")
    factor = float(sc.get("factor", 1.0))
    if kind == "linear":
        inv = inv / factor
    elif kind == "llama3":
        lo, hi = float(sc.get("low_freq_factor", 1.0)), float(sc.get("high_freq_factor", 4.0))
        old = float(sc.get("original_max_position_embeddings", 8192))
        wavelen = 2 * math.pi / inv
        smooth = ((old / wavelen) - lo) / (hi - lo)
        scaled = torch.where(wavelen > old / lo, inv / factor, inv)
        mid = (wavelen <= old / lo) & (wavelen >= old / hi)
        inv = torch.where(mid, (1 - smooth) * inv / factor + smooth * inv, scaled)
    return inv.float()


Rope = tuple[torch.Tensor, torch.Tensor]


def rope_tables(positions: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype) -> Rope:
    """positions (*lead,) -> cos, sin (*lead, head_dim) for rotate-half RoPE."""
    freqs = positions.float().unsqueeze(-1) * inv_freq  # (*lead, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(..., d) -> (..., d) with halves swapped and the first negated."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)
