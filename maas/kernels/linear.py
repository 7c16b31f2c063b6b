"""Faster CPU linear layers: weights packed by fbgemm as fp16 or int8 (dynamic activation scale).

A transformation applied to an ordinary model (every nn.Linear is swapped), not a flag inside it.
Their speeds are in docs/benchmarks.md.

`q8` (kernels/q8_linear.py) keeps 8-bit weights in blocks of 32 and runs a native AVX2 kernel.
`float16` computes in fp32 from fp16 weights and gives each row the same result at any batch
size. `int8` quantizes activations per call over the whole batch, so a row's result can shift
slightly with what else is in the batch.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

MODES = ("float32", "float16", "int8", "q8")


def pack_linears(model: nn.Module, mode: str) -> nn.Module:
    """Replace every nn.Linear of a CPU float32 model with an fbgemm-packed one (in place)."""
    if mode == "float32":
        return model
    if mode == "q8":
        from maas.kernels.q8_linear import pack_q8

        return pack_q8(model)
    if mode not in MODES:
        raise ValueError(f"unknown weight mode {mode!r} (choose from {', '.join(MODES)})")
    dtype = torch.float16 if mode == "float16" else torch.qint8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import (
            float16_dynamic_qconfig,
            per_channel_dynamic_qconfig,
            quantize_dynamic,
        )

        qconfig = float16_dynamic_qconfig if mode == "float16" else per_channel_dynamic_qconfig
        return quantize_dynamic(model, {nn.Linear: qconfig}, dtype=dtype, inplace=True)
