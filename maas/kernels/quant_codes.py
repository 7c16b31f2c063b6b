"""Weight-only quantization codes as the registry stores them: int8 (symmetric) and int4 (scale + min), per group.

q, s = quantize_int8(w, group_size=32)         # w (N, K) -> int8 (N, K), fp16 scales (N, K/32)
q, s, m = quantize_int4(w, group_size=32)      # -> uint8 (N, K/2) two codes a byte, fp16 scales, mins
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

BITS = (8, 4)


@dataclass(frozen=True)
class Scheme:
    """How one linear layer is quantized: bits and the number of weights sharing a scale."""

    bits: int
    group_size: int  # a divisor of the layer's in_features; in_features itself = one scale per channel

    def as_dict(self) -> dict[str, int]:
        """JSON form (config.json's quantization_config)."""
        return {"bits": self.bits, "group_size": self.group_size}


def group_range(g: torch.Tensor, bits: int, shrink: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weights (..., group) -> fp16 scale (...) and, for int4, fp16 min (...) covering the group's range
    (shrunk towards zero by `shrink`); int8 is symmetric (no min)."""
    if bits == 8:
        return (g.abs().amax(-1) * shrink / 127.0).half(), None
    lo = (g.amin(-1) * shrink).half()
    return ((g.amax(-1) * shrink - lo.float()) / 15.0).half(), lo


def encode(
    w: torch.Tensor, scale: torch.Tensor, lo: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Round `w` against a (broadcastable) fp16 scale and min: (codes as float, the values they stand
    for). int8 codes lie in -127..127 (no min), int4 codes in 0..15."""
    s = scale.float()
    if lo is None:
        q = torch.where(s > 0, w / s.clamp_min(1e-30), 0.0).round().clamp(-127, 127)
        return q, q * s
    m = lo.float()
    q = torch.where(s > 0, (w - m) / s.clamp_min(1e-30), 0.0).round().clamp(0, 15)
    return q, q * s + m


def quantize_int8(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Round to nearest, symmetric: (N, K) -> int8 codes (N, K), fp16 scales (N, K / group_size)."""
    N, K = w.shape
    g = w.float().reshape(N, K // group_size, group_size)
    scale, _ = group_range(g, 8)  # (N, G), fp16 first: codes are made against the stored scale
    q, _ = encode(g, scale.unsqueeze(-1), None)
    return q.to(torch.int8).reshape(N, K), scale


def quantize_int4(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round to nearest, asymmetric: (N, K) -> packed codes uint8 (N, K/2), fp16 scales and mins (N, G)."""
    N, K = w.shape
    g = w.float().reshape(N, K // group_size, group_size)
    scale, mins = group_range(g, 4)
    assert mins is not None
    q, _ = encode(g, scale.unsqueeze(-1), mins.unsqueeze(-1))
    return pack_nibbles(q.to(torch.uint8).reshape(N, K)), scale, mins


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """(N, K) codes 0..15 -> (N, K/2) bytes, even k in the low nibble."""
    return q[:, 0::2] | (q[:, 1::2] << 4)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_nibbles`: (N, K/2) bytes -> (N, K) codes as uint8."""
    return torch.stack([packed & 0xF, packed >> 4], dim=-1).reshape(packed.shape[0], -1)


def dequantize(
    qweight: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor | None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Stored layout -> the (N, K) weight in `dtype`."""
    q = unpack_nibbles(qweight) if mins is not None else qweight
    N, K = q.shape
    G = scales.shape[1]
    w = q.to(dtype).reshape(N, G, K // G) * scales.to(dtype).unsqueeze(-1)
    if mins is not None:
        w = w + mins.to(dtype).unsqueeze(-1)
    return w.reshape(N, K)


def q4_1_blocks(qweight: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor) -> torch.Tensor:
    """int4 codes (N, K/2) with fp16 scales and mins (N, G), G dividing K / 32 -> (N, K/32 * 20) bytes of
    GGUF Q4_1 blocks standing for the same weights (each block: d, m, then element j in byte j's low nibble
    and element j + 16 in its high nibble)."""
    codes = unpack_nibbles(qweight)
    N, K = codes.shape
    B = K // 32
    per = B // scales.shape[1]  # Q4_1 blocks per stored group
    # (stored as fp16; a loader may have widened them, which is exact)
    d = scales.half().repeat_interleave(per, dim=1).contiguous().view(torch.uint8).view(N, B, 2)
    m = mins.half().repeat_interleave(per, dim=1).contiguous().view(torch.uint8).view(N, B, 2)
    c = codes.view(N, B, 32)
    qs = c[..., :16] | (c[..., 16:] << 4)
    return torch.cat([d, m, qs], dim=-1).reshape(N, B * 20)


def quantize_weight(w: torch.Tensor, scheme: Scheme) -> dict[str, torch.Tensor]:
    """A float weight -> the stored tensors (`qweight`, `scales`, and `mins` for int4)."""
    if scheme.bits == 8:
        q, s = quantize_int8(w, scheme.group_size)
        return {"qweight": q, "scales": s}
    q, s, m = quantize_int4(w, scheme.group_size)
    return {"qweight": q, "scales": s, "mins": m}


def in_features(module: nn.Module) -> int:
    """What a weight row holds: a linear layer's inputs, an embedding's dimension, a convolution's
    input channels (per group) times its kernel's positions."""
    if isinstance(module, nn.Embedding):
        return module.embedding_dim
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return module.in_channels // module.groups * kh * kw
    assert isinstance(module, nn.Linear)
    return module.in_features


def eligible(module: nn.Module, scheme: Scheme) -> bool:
    """Whether a linear layer or embedding fits `scheme` (groups divide its rows; int4 needs even groups)."""
    K, g = in_features(module), scheme.group_size
    return g > 0 and K % g == 0 and (scheme.bits == 8 or g % 2 == 0)
