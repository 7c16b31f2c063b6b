"""Checkpoints: model, optimizer, schedule, RNG states and data position, written atomically.

A checkpoint is one `torch.save` file written to a temporary name, fsynced and renamed over
`last.pt`, so a crash mid-write leaves the previous checkpoint intact. Rank 0 writes; every rank
reads it on resume.
"""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maas.errors import MaasError

LAST = "last.pt"


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) generator states."""
    st: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    """Restore what rng_state() returned."""
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def save(directory: Path, state: dict[str, Any]) -> Path:
    """Write `state` to directory/last.pt atomically; returns the path."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / LAST
    tmp = directory / f".{LAST}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with tmp.open("wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def load(directory: Path) -> dict[str, Any] | None:
    """The last checkpoint in `directory`, or None when there is none."""
    path = directory / LAST
    if not path.exists():
        return None
    try:
        return dict(torch.load(path, map_location="cpu", weights_only=False))
    except Exception as e:  # torch raises several types for a damaged file
        raise MaasError(
            f"checkpoint {str(path)!r} is unreadable ({type(e).__name__}: {e}); remove it to start over"
        ) from None
