"""Find a model by what a user typed: a path, a registry reference, or a built-in name.

`locate` never loads anything: it says what the model is (name, kind, size) and where it comes
from; `local_path` turns that into files the loaders accept (verifying registry digests).
Request fields from the network go through `locate_named`, which never looks at the filesystem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from maas.errors import InvalidRequestError, ModelNotFoundError
from maas.models.families import Kind, kind_of
from maas.store.builtin import BUILTINS, builtin_path

if TYPE_CHECKING:
    from maas.store.registry import Registry


@dataclass(frozen=True)
class Located:
    """A model found but not loaded."""

    name: str  # the API name it is served under
    kind: Kind
    origin: str  # "path" | "registry" | "builtin"
    source: str  # the path, the registry reference name:tag, or the built-in name
    size: int  # bytes on disk


def _registry() -> Registry:
    from maas.store.registry import Registry

    return Registry()


def api_name(name: str, tag: str) -> str:
    """How a registry tag is served: `name` for latest, else `name:tag`."""
    return name if tag == "latest" else f"{name}:{tag}"


def locate_named(ref: str, registry: Registry | None = None) -> Located | None:
    """A registry model or built-in by name (None when neither knows it); paths are never consulted."""
    from maas.store.registry import parse_ref

    try:
        name, tag = parse_ref(ref)
    except InvalidRequestError:
        return None
    reg = registry if registry is not None else _registry()
    try:
        info = reg.show(f"{name}:{tag}")
    except ModelNotFoundError:
        info = None
    if info is not None:
        return Located(api_name(name, tag), kind_of(info.family), "registry", f"{name}:{tag}", info.size)
    if ref in BUILTINS:
        p = builtin_path(ref)
        if p.exists():
            size = (
                sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
            )
            return Located(ref, BUILTINS[ref].kind, "builtin", ref, size)
    return None


def locate(name_or_path: str) -> Located:
    """What a command-line argument names: an existing path first, then the registry, then built-ins."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        from maas.store.describe import describe_files

        family, _, files = describe_files(p)
        stem = p.name.removesuffix(".gguf") if p.is_file() else p.name
        return Located(stem.lower(), kind_of(family), "path", str(p), sum(f.stat().st_size for _, f in files))
    found = locate_named(name_or_path)
    if found is not None:
        return found
    raise ModelNotFoundError(
        f"{name_or_path!r} is neither a model path, a built-in model ({', '.join(sorted(BUILTINS))}) "
        "nor a model in the registry (see `maas models list`)"
    )


def local_path(found: Located, registry: Registry | None = None) -> Path:
    """Files for the loaders; a registry model's blobs are re-hashed first (corruption is an error)."""
    if found.origin == "registry":
        reg = registry if registry is not None else _registry()
        return reg.path_for(found.source)
    if found.origin == "builtin":
        return builtin_path(found.source)
    return Path(found.source)


def resolve(name_or_path: str) -> tuple[str, Path]:
    """(API name, local path) for a command-line argument."""
    found = locate(name_or_path)
    return found.name, local_path(found)
