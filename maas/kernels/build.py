"""Compiling the builds of native.py's table with torch's cpp_extension (ninja, a C++ compiler): at install
(`maas kernels build`), never while serving."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from maas.kernels.native import BUILDS, CSRC, Build, compiler, cpu_flags, kernels_dir

log = logging.getLogger("maas.kernels")


@dataclass(frozen=True)
class Outcome:
    """What building one entry of the table did: built, present (up to date), skipped (this CPU cannot run
    it, or no compiler) or failed; with the reason and the seconds it took."""

    build: Build
    state: str
    detail: str = ""
    seconds: float = 0.0


def build_all(force: bool = False, say: Callable[[str], None] = print) -> list[Outcome]:
    """Build every entry this CPU can run that is not built yet (`force`: again); old builds of the same names
    are removed. `say` reports each step."""
    out: list[Outcome] = []
    missing = compiler()
    for b in BUILDS.values():
        if not b.runs_here():
            out.append(Outcome(b, "skipped", "this CPU lacks " + " ".join(sorted(b.needs - cpu_flags()))))
        elif b.path().exists() and not force:
            out.append(Outcome(b, "present"))
        elif missing:
            out.append(Outcome(b, "skipped", missing))
        else:
            say(f"building {b.name} (ninja, {os.environ.get('CXX', 'c++')}; this takes a minute)...")
            out.append(_build(b))
    if missing and any(o.state == "skipped" and o.detail == missing for o in out):
        say(f"maas: {missing}: the native kernels are not built; maas runs the slower torch reference")
    return out


def _build(b: Build) -> Outcome:
    from torch.utils.cpp_extension import load

    root = kernels_dir()
    final = root / b.module
    tmp = root / f".{b.module}.building-{os.getpid()}"
    t0 = time.perf_counter()
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _ninja_on_path()
        load(
            name=b.module,
            sources=[str(CSRC / s) for s in b.sources],
            extra_cflags=list(b.cflags),
            extra_ldflags=["-fopenmp"],
            build_directory=str(tmp),
            verbose=False,
        )
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)  # the build appears whole or not at all
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        return Outcome(b, "failed", _first_error(e), time.perf_counter() - t0)
    _remove_stale(root, b)
    return Outcome(b, "built", str(final), time.perf_counter() - t0)


def _ninja_on_path() -> None:
    """Put the interpreter's bin directory (where pip installs ninja) on PATH for torch's builder."""
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def _remove_stale(root: Path, b: Build) -> None:
    """Earlier builds of the same name (other digests), and builds a killed install left half done."""
    for d in root.iterdir():
        old = d.name.startswith(f"{b.name}_") and d.name != b.module and len(d.name) == len(b.module)
        left = d.name.startswith(f".{b.name}_") and not _alive(d.name.rpartition("-")[2])
        if old or left:
            shutil.rmtree(d, ignore_errors=True)


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _first_error(e: Exception) -> str:
    """The compiler's first error line, or the exception's first line."""
    text = str(e)
    for line in text.splitlines():
        if "error:" in line:
            return line.strip()
    return text.splitlines()[0] if text else type(e).__name__
