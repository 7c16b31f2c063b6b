"""Building the C++ kernels in csrc/ with torch's cpp_extension (ninja, g++), once, cached under
~/.cache/torch_extensions. `MAAS_NO_NATIVE=1`, no compiler or not x86: None, and callers run their torch
reference. A kernel written for both widths builds for AVX-512 where the CPU has it (`MAAS_NATIVE_ISA=avx2`
keeps the AVX2 build)."""

from __future__ import annotations

import hashlib
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

log = logging.getLogger("maas.kernels")

CFLAGS = ["-O3", "-mavx2", "-mfma", "-mf16c", "-funroll-loops", "-fopenmp"]
AVX512 = ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl"]
# csrc/int_linear.cpp, part of the AVX-512 build: its VNNI / AMX instructions run only where the CPU has them
INT = ["-mavx512vnni", "-mamx-tile", "-mamx-int8", "-DMAAS_INT"]


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux: /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    return frozenset(
        next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    )


def cpu_has_avx512() -> bool:
    """Whether this CPU runs the AVX-512 instructions the wide builds use."""
    return {"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= cpu_flags()


def wide() -> bool:
    """Whether kernels with an AVX-512 build take it here."""
    return os.environ.get("MAAS_NATIVE_ISA", "auto") != "avx2" and cpu_has_avx512()


@lru_cache(maxsize=1)
def _headers_digest() -> str:
    digest = hashlib.sha1()
    for h in sorted((Path(__file__).parent / "csrc").glob("*.h")):
        digest.update(h.read_bytes())
    return digest.hexdigest()[:10]


def build(name: str, *sources: str, avx512: bool = False, extra: tuple[str, ...] = ()) -> Any | None:
    """The compiled extension `name` from csrc/`sources` (with `avx512`, the AVX-512 build, named
    `name`_avx512; either name ends with a digest of csrc's headers; `extra`: sources of that build only,
    compiled with INT's flags), or None where it cannot be built."""
    if os.environ.get("MAAS_NO_NATIVE") == "1":
        return None
    if avx512:
        name += "_avx512"
    name += "_" + _headers_digest()  # torch's builder hashes only the sources: a changed header is a new name
    try:
        from torch.utils.cpp_extension import load

        log.debug("loading the native kernel %s (compiled on first use, about a minute, then cached)", name)
        return load(
            name=name,
            sources=[str(Path(__file__).parent / "csrc" / s) for s in sources + (extra if avx512 else ())],
            extra_cflags=CFLAGS + (AVX512 + (INT if extra else []) if avx512 else []),
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as e:  # no compiler, no ninja, not x86: slower but correct
        log.warning(
            "native kernel %s unavailable (%s); using the torch reference", name, str(e).splitlines()[0]
        )
        return None
