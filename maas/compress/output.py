"""Where every compression result goes: a model directory (config.json, model.safetensors, other files, the
source's tokenizer and side files) that becomes a registry version with its lineage (parent, operation,
parameters). LMs, encoders and tensor models alike.

    info = save_version(source, result, "quantize", name=None)   # name default: <source name>:<result.tag>
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from maas.store.registry import Registry, VersionInfo, parse_ref

if TYPE_CHECKING:
    import torch

    from maas.compress.method import Result
    from maas.compress.source import Source
    from maas.formats import ModelFiles

# Files of a model directory that hold weights or the config: rewritten, never copied.
_WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".h5", ".msgpack", ".pt2")


def save_version(source: Source, result: Result, operation: str, name: str | None) -> VersionInfo:
    """Write the result's directory, import it as `name` (default `<source name>:<result tag>`) with
    `source` as its parent, `operation` and the result's report as its parameters."""
    ref = name or f"{source.ref[0]}:{result.tag}"
    parse_ref(ref)  # a bad name fails before any file is written
    parameters = dict(result.report)
    if source.parent_ref is None:
        parameters["source"] = source.found.source
    reg = Registry()
    tmp = Path(tempfile.mkdtemp(prefix="compress-", dir=reg.home))
    try:
        write_directory(source, result, tmp)
        return reg.import_path(tmp, ref, parent=source.parent_ref, operation=operation,
                               metrics=dict(result.metrics) or None, parameters=parameters)  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_directory(source: Source, result: Result, out: Path) -> None:
    """The version's files: the source's tokenizer and side files, then config.json, model.safetensors
    (when there are tensors) and the result's other files."""
    from safetensors.torch import save_file

    if source.kind == "tensor":
        copy_side_files(source.path, out)
    else:
        write_tokenizer(source.files, out)
    if result.config:
        (out / "config.json").write_text(json.dumps(result.config, indent=2) + "\n")
    if result.tensors:
        tensors = result.tensors if source.kind == "tensor" else hf_convention(source.files, result.tensors)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "model.safetensors"),
                  metadata={"format": "pt"})  # fmt: skip
    for rel, data in result.files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)


def hf_convention(files: ModelFiles, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors as an HF directory stores them: a family whose checkpoints keep norm weights as w in
    x * (1 + w) (Gemma) gets 1 taken off the factors the readers give (formats/hf.py adds it back)."""
    from maas.models.families import by_name

    row = by_name(files.architecture)
    if row is None or not row.norm_plus_one:
        return tensors
    return {k: v.float() - 1.0 if k.endswith("norm.weight") else v for k, v in tensors.items()}


def copy_side_files(src: Path, out: Path) -> None:
    """Copy a model directory's files that are neither weights nor config.json (tokenizers, vocabularies)."""
    if not src.is_dir():
        return
    for p in src.rglob("*"):
        rel = p.relative_to(src)
        if p.is_file() and rel.name != "config.json" and not p.name.endswith(_WEIGHT_FILES):
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, out / rel)


def write_tokenizer(files: ModelFiles, out: Path) -> None:
    """Copy an HF directory's tokenizer and side files, or write a GGUF model's tokenizer as
    tokenizer.json + tokenizer_config.json + generation_config.json."""
    if files.format != "gguf":
        copy_side_files(files.path, out)
        return
    from maas.text.tokenizer import Tokenizer

    src = files.tokenizer
    Tokenizer.from_source(src).hf.save(str(out / "tokenizer.json"))
    tc: dict[str, object] = {
        "bos_token": src.bos_token,
        "eos_token": src.eos_token,
        "add_bos_token": src.add_bos_token,
    }
    if src.chat_template:
        tc["chat_template"] = src.chat_template
    (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2))
    (out / "generation_config.json").write_text(json.dumps({"eos_token_id": src.eos_token_ids}))
