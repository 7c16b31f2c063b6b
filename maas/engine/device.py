"""Which device a model runs on: CUDA when present, else the CPU."""

from __future__ import annotations

import torch

from maas.errors import MaasError


def pick_device(device: str = "auto", index: int | None = None) -> torch.device:
    """`auto` -> cuda (GPU `index` when given) when present, else cpu; asking for cuda without
    CUDA is an error."""
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda" if index is None else f"cuda:{index}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MaasError(f"device {device!r} was asked for but CUDA is not available here")
    return torch.device(device)
