"""Weight-only 8-bit linear layers (blocks of 32, llama.cpp Q8_0-like) with a native AVX2 kernel.

    pack_q8(model)   # every nn.Linear whose shapes allow it becomes a Q8Linear, in place

The C++ kernel (csrc/q8_linear.cpp) is built at install (kernels/native.py). Each output is accumulated
in the same order at any batch size, so a request's answer does not depend on what else is in the batch.
Without the build the layer falls back to a torch reference (dequantize, then F.linear).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from maas.kernels.native import first_loading

BLOCK = 32


@lru_cache(maxsize=1)
def native() -> Any | None:
    """The installed extension, or None where it is not built (then the reference runs)."""
    return first_loading("q8_linear")


def quantize_q8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W (N, K) float -> packed int8 (N/8, K/32, 32, 8) and scales (N/8, K/32, 8)."""
    N, K = w.shape
    blocks = w.float().reshape(N, K // BLOCK, BLOCK)  # (N, KB, 32)
    scale = blocks.abs().amax(-1) / 127.0  # (N, KB)
    q = torch.where(scale.unsqueeze(-1) > 0, blocks / scale.clamp_min(1e-30).unsqueeze(-1), 0.0)
    q = q.round().clamp(-127, 127).to(torch.int8)
    packed = q.reshape(N // 8, 8, K // BLOCK, BLOCK).permute(0, 2, 3, 1).contiguous()  # (NB, KB, 32, 8)
    scales = scale.reshape(N // 8, 8, K // BLOCK).permute(0, 2, 1).contiguous()  # (NB, KB, 8)
    return packed, scales


def dequantize_q8(packed: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Inverse of `quantize_q8` (up to rounding): (N, K) float32."""
    NB, KB, _, _ = packed.shape
    q = packed.permute(0, 3, 1, 2).reshape(NB * 8, KB, BLOCK).float()
    s = scales.permute(0, 2, 1).reshape(NB * 8, KB, 1)
    return (q * s).reshape(NB * 8, KB * BLOCK)


class Q8Linear(nn.Module):
    """A linear layer with 8-bit block-quantized weights."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        q, s = quantize_q8(linear.weight.detach())
        self.register_buffer("qweight", q)
        self.register_buffer("scales", s)
        self.bias = (
            None if linear.bias is None else nn.Parameter(linear.bias.detach().float(), requires_grad=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).float().contiguous()
        ext = native() if x2.device.type == "cpu" else None
        if ext is not None:
            y = ext.q8_linear(x2, self.qweight, self.scales, self.bias)
        else:
            y = F.linear(x2, dequantize_q8(self.qweight, self.scales), self.bias)  # type: ignore[arg-type]
        return y.view(*lead, self.out_features)


def pack_q8(model: nn.Module) -> nn.Module:
    """Swap every eligible nn.Linear (out % 8 == 0, in % 32 == 0) for a Q8Linear, in place."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Linear) and child.out_features % 8 == 0 and child.in_features % BLOCK == 0:
            setattr(model, name, Q8Linear(child))
        else:
            pack_q8(child)
    return model
