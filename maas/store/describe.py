"""What a model path holds, as the registry records it: family, format, files and a tensor model's signature."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from maas.errors import ModelFormatError
from maas.models.families import FILE_FAMILIES, kind_of
from maas.models.signature import exported_signature


def describe_files(path: Path) -> tuple[str, str, list[tuple[str, Path]]]:
    """(family, format, [(relpath, file)]) for a GGUF file or an HF-style directory."""
    if path.is_file() and path.suffix in FILE_FAMILIES:
        family = FILE_FAMILIES[path.suffix]
        return family, family, [(path.name, path)]
    if path.is_file():
        with path.open("rb") as f:
            magic = f.read(4)
        if magic != b"GGUF":
            raise ModelFormatError(
                f"{str(path)!r} is neither a GGUF, .onnx, .pt2 or .pt file nor a model directory"
            )
        from maas.formats.gguf_reader import GGUFFile

        arch = str(GGUFFile(path).fields.get("general.architecture", "unknown"))
        return arch, "gguf", [(path.name, path)]
    if path.is_dir() and (path / "config.json").exists():
        try:
            family = str(json.loads((path / "config.json").read_text()).get("model_type", "unknown"))
        except (OSError, json.JSONDecodeError) as e:
            raise ModelFormatError(f"cannot read {str(path / 'config.json')!r}: {e}") from None
        files = sorted(
            (str(p.relative_to(path)), p)
            for p in path.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )
        return family, family if family in FILE_FAMILIES.values() else "hf", files
    raise ModelFormatError(
        f"{str(path)!r} does not exist or is not a GGUF file / .onnx file / HF model directory"
    )


def read_signature(path: Path, family: str) -> dict[str, Any] | None:
    """A tensor model's signature as recorded in the registry (None for LLMs and encoders)."""
    if kind_of(family) != "tensor":
        return None
    if family == "onnx":
        from maas.formats.onnx import onnx_signature

        return onnx_signature(path).as_dict()
    if family in ("torch-export", "torchscript"):
        from maas.formats.torch_program import program_signature  # imports torch: only for these files

        return program_signature(path).as_dict()
    try:
        meta = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelFormatError(f"cannot read {str(path / 'config.json')!r}: {e}") from None
    sig = exported_signature(meta) if isinstance(meta, dict) else None
    return sig.as_dict() if sig is not None else None
