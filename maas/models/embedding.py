"""Embedding tables that skip their random initialisation when built on the meta device."""

from __future__ import annotations

import torch
from torch import nn


def embedding(num: int, dim: int) -> nn.Embedding:
    """`nn.Embedding(num, dim)`; on the meta device (a model about to be loaded from a file) without the normal
    initialisation, whose meta kernel imports torch._dynamo and sympy into the process (resident memory and
    start-up time) for nothing."""
    if torch.get_default_device().type == "meta":
        return nn.Embedding(num, dim, _weight=torch.empty(num, dim))
    return nn.Embedding(num, dim)
