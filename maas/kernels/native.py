"""Building the C++ kernels in csrc/ with torch's cpp_extension (ninja, g++), once, cached under
~/.cache/torch_extensions. `MAAS_NO_NATIVE=1`, no compiler or not x86: None, and callers run their torch
reference."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("maas.kernels")

CFLAGS = ["-O3", "-mavx2", "-mfma", "-mf16c", "-funroll-loops", "-fopenmp"]


def build(name: str, *sources: str) -> Any | None:
    """The compiled extension `name` from csrc/`sources`, or None where it cannot be built."""
    if os.environ.get("MAAS_NO_NATIVE") == "1":
        return None
    try:
        from torch.utils.cpp_extension import load

        log.debug("loading the native kernel %s (compiled on first use, about a minute, then cached)", name)
        return load(
            name=name,
            sources=[str(Path(__file__).parent / "csrc" / s) for s in sources],
            extra_cflags=CFLAGS,
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as e:  # no compiler, no ninja, not x86: slower but correct
        log.warning(
            "native kernel %s unavailable (%s); using the torch reference", name, str(e).splitlines()[0]
        )
        return None
