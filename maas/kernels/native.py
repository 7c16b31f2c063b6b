"""The C++ kernels in csrc/: built once at install (`maas kernels build`, run by `make install`) into the
install's own directory, and only loaded at run time.

Each build has a name and a digest of everything it is made from (its sources, csrc's headers, its flags,
torch's version); it lives in `kernels_dir()/NAME_DIGEST/NAME_DIGEST.so`. Sources that changed after the
install have a new digest, so their build is missing until the next install: maas says so once and runs the
torch reference, it never compiles while serving. `MAAS_NO_NATIVE=1`: no kernel is loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType

log = logging.getLogger("maas.kernels")

CSRC = Path(__file__).parent / "csrc"
CFLAGS = ("-O3", "-mavx2", "-mfma", "-mf16c", "-funroll-loops", "-fopenmp")
AVX2 = frozenset({"avx2", "fma", "f16c"})
AVX512_FLAGS = ("-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl")
AVX512 = AVX2 | {"avx512f", "avx512dq", "avx512bw", "avx512vl"}
# csrc/int_linear.cpp, part of the AVX-512 build: its VNNI / AMX instructions run only where the CPU has them
INT_FLAGS = ("-mavx512vnni", "-mamx-tile", "-mamx-int8", "-DMAAS_INT")
BLOCK_SOURCES = ("block_linear.cpp", "decode.cpp", "prefill_attention.cpp")


@dataclass(frozen=True)
class Build:
    """One compiled extension: its name, csrc/ sources, compiler flags and the CPU features it needs."""

    name: str
    sources: tuple[str, ...]
    cflags: tuple[str, ...]
    needs: frozenset[str]

    @property
    def module(self) -> str:
        """The extension's module name: the build's name and its digest."""
        return f"{self.name}_{self.digest()}"

    def digest(self) -> str:
        """A digest of the sources, csrc's headers, the flags and torch's version."""
        import torch

        h = hashlib.sha1()
        for f in [CSRC / s for s in self.sources] + sorted(CSRC.glob("*.h")):
            h.update(f.name.encode() + b"\0" + f.read_bytes())
        h.update(" ".join(self.cflags).encode() + b"\0" + torch.__version__.encode())
        return h.hexdigest()[:12]

    def path(self) -> Path:
        """Where this build's shared library is (or would be)."""
        return kernels_dir() / self.module / f"{self.module}.so"

    def runs_here(self) -> bool:
        """Whether this CPU has the features the build needs."""
        return self.needs <= cpu_flags()


BUILDS = {
    b.name: b
    for b in (
        Build("maas_block_linear_avx2", BLOCK_SOURCES, CFLAGS, AVX2),
        Build(
            "maas_block_linear_avx512",
            BLOCK_SOURCES + ("int_linear.cpp", "int_greedy.cpp"),
            CFLAGS + AVX512_FLAGS + INT_FLAGS,
            AVX512,
        ),
        Build("maas_q8_linear", ("q8_linear.cpp",), CFLAGS, AVX2),
    )
}


def kernels_dir() -> Path:
    """Where the builds live: MAAS_KERNELS_DIR, else the install's prefix (the venv), not a user's cache."""
    return Path(os.environ.get("MAAS_KERNELS_DIR") or Path(sys.prefix) / "lib" / "maas-kernels")


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
    return cpu_flags() >= AVX512


def wide() -> bool:
    """Whether kernels with an AVX-512 build take it here."""
    return os.environ.get("MAAS_NATIVE_ISA", "auto") != "avx2" and cpu_has_avx512()


_warned: set[str] = set()  # builds already warned about, once a process


def load(build: Build, warn: bool = True) -> ModuleType | None:
    """The installed build, imported; None (and, with `warn`, one warning) where it is missing or does not
    load, or with MAAS_NO_NATIVE=1. Never compiles."""
    if os.environ.get("MAAS_NO_NATIVE") == "1":
        return None
    path = build.path()
    if not path.exists():
        problem = "is not built for this install's sources"
    else:
        try:
            ext = _import(build.module, path)
            log.debug("native kernel %s loaded from %s", build.name, path)
            return ext
        except Exception as e:  # built against another torch, a damaged file
            problem = f"at {path} does not load ({str(e).splitlines()[0]})"
    if warn and build.name not in _warned:
        _warned.add(build.name)
        log.warning(
            "native kernel %s %s (run `maas kernels build`); using the torch reference", build.name, problem
        )
    return None


def first_loading(kind: str, warn: bool = True) -> ModuleType | None:
    """The build of `kind` ("block_linear", "q8_linear") that runs here: the AVX-512 block build where the CPU
    has AVX-512 (`wide()`), else the AVX2 one; None where none loads."""
    names = [f"maas_{kind}"] if kind == "q8_linear" else ["maas_block_linear_avx2"]
    if kind == "block_linear" and wide():
        names.insert(0, "maas_block_linear_avx512")
    for name in names:
        ext = load(BUILDS[name], warn)
        if ext is not None:
            return ext
    return None


def _import(module: str, path: Path) -> ModuleType:
    import torch  # noqa: F401  (the extension links against torch's libraries, loaded first)

    loaded = sys.modules.get(module)
    if loaded is not None and getattr(loaded, "__file__", None) == str(path):
        return loaded
    spec = importlib.util.spec_from_file_location(module, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"no extension module at {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules[module] = mod
    return mod


def compiler() -> str | None:
    """Why the builds cannot be made here (no C++ compiler, no ninja), or None when they can."""
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        return f"no C++ compiler ({cxx}) on PATH"
    if shutil.which("ninja") is None and shutil.which("ninja", path=str(Path(sys.executable).parent)) is None:
        return "no ninja on PATH"
    return None
