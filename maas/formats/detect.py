"""Open a model path of any supported format."""

from __future__ import annotations

import json
from pathlib import Path

from maas.errors import ModelFormatError
from maas.formats.base import ModelFiles
from maas.models.families import FILE_FAMILIES


def open_model_files(path: str | Path) -> ModelFiles:
    """Open a GGUF file or an HF-style directory (config.json + *.safetensors + tokenizer.json)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelFormatError(f"model path {str(p)!r} does not exist")
    if p.is_dir():
        if (p / "config.json").exists():
            from maas.formats.hf import open_hf_dir

            return open_hf_dir(p)
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            p = ggufs[0]
        else:
            raise ModelFormatError(
                f"{str(p)!r} is a directory without config.json (and not exactly one .gguf file in it)"
            )
    with p.open("rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        from maas.formats.gguf import open_gguf

        return open_gguf(p)
    raise ModelFormatError(
        f"{str(p)!r} is neither a GGUF file (bad magic {magic!r}) nor an HF model directory"
    )


def model_format(path: Path) -> str:
    """One of "onnx", "torch-export", "torchscript" (a file, or a directory's config.json model_type),
    or "maas" (a `maas train` export)."""
    if path.is_file():
        return FILE_FAMILIES.get(path.suffix, "maas")
    meta = path / "config.json"
    if meta.exists():
        try:
            kind = json.loads(meta.read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError):
            kind = None
        return kind if kind in FILE_FAMILIES.values() else "maas"
    return next((FILE_FAMILIES[f.suffix] for f in path.iterdir() if f.suffix in FILE_FAMILIES), "maas")
