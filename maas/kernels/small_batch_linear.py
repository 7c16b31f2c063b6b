"""CPU linear layers that take a faster path for few rows (one short sentence, a small batch).

With few rows, a float32 matmul is bound by reading the weights (MKL also re-packs them on every
call); with many rows it is bound by arithmetic, where MKL's float32 kernel is the fastest.
`SmallBatchLinear` keeps the float32 weight for many rows and a pre-packed copy for few:

- `float32`: oneDNN's pre-packed float32 weights: the same arithmetic, no re-packing per call;
- `float16`: fbgemm's packed float16 weights (half the bytes to read), float32 arithmetic.

Their speeds: `python benchmarks/small_batch_linear.py` (docs/benchmarks.md).

A transformation applied to an ordinary float32 model (every nn.Linear is swapped).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SMALL_MODES = ("float32", "float16")


def available(mode: str) -> bool:
    """Whether this torch build has the kernels for `mode`."""
    if mode == "float32":
        return bool(torch.backends.mkldnn.is_available())
    return "fbgemm" in torch.backends.quantized.supported_engines


class SmallBatchLinear(nn.Module):
    """nn.Linear with a pre-packed weight for inputs of at most `max_rows` rows (2-D, on the CPU)."""

    def __init__(self, linear: nn.Linear, mode: str, max_rows: int = 192):
        super().__init__()
        if mode not in SMALL_MODES:
            raise ValueError(f"unknown small-batch mode {mode!r} (choose from {', '.join(SMALL_MODES)})")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.mode, self.max_rows = mode, max_rows
        w = linear.weight.detach()
        self.packed_bytes = w.numel() * (2 if mode == "float16" else 4)  # the pre-packed copy
        if mode == "float32":
            self._packed: object = torch.ops.mkldnn._reorder_linear_weight(w)
        else:
            b = None if linear.bias is None else linear.bias.detach()
            self._packed = torch.ops.quantized.linear_prepack_fp16(w, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[0] > self.max_rows:
            return F.linear(x, self.weight, self.bias)
        if self.mode == "float32":
            return torch.ops.mkldnn._linear_pointwise(x, self._packed, self.bias, "none", [], "")
        return torch.ops.quantized.linear_dynamic_fp16(x, self._packed)

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}, {self.out_features}, small batches: {self.mode} (<= {self.max_rows} rows)"
        )


def pack_small_batches(model: nn.Module, mode: str, max_rows: int = 192) -> int:
    """Swap every float32 CPU nn.Linear of `model` for a SmallBatchLinear (in place); how many."""
    if not available(mode):
        return 0
    n = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if (
                type(child) is nn.Linear
                and child.weight.device.type == "cpu"
                and child.weight.dtype == torch.float32
            ):
                setattr(parent, name, SmallBatchLinear(child, mode, max_rows))
                n += 1
    return n
