"""Where every compression result goes: a model directory (config.json, safetensors, tokenizer) that
becomes a registry version with its lineage (parent, operation, parameters).

    source = open_source("smollm2-135m-instruct")           # a registry ref, a built-in name or a path
    info = save_version(source, config, tensors, "quantize", {"method": "int4", ...}, name=None)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from maas.errors import InvalidRequestError
from maas.formats import ModelFiles, open_model_files
from maas.store.builtin import ensure_builtins_imported
from maas.store.locate import Located, local_path, locate
from maas.store.registry import Registry, VersionInfo, parse_ref

# Files of an HF directory that hold weights or the config: rewritten, never copied.
_WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".h5", ".msgpack")


@dataclass
class Source:
    """The model a compression step starts from: where it was found and its files, opened."""

    found: Located
    files: ModelFiles

    @property
    def parent_ref(self) -> str | None:
        """The registry reference the result descends from (None for a plain path)."""
        return self.found.source if self.found.origin == "registry" else None


def locate_model(name: str) -> Located:
    """Find a model by what a user typed (built-ins are imported into the registry first, so that results
    have a parent to point at)."""
    ensure_builtins_imported()
    return locate(name)


def open_source(name: str) -> Source:
    """Find an LM or encoder by what a user typed and open its files."""
    found = locate_model(name)
    if found.kind not in ("llm", "embedding"):
        raise InvalidRequestError(
            f"{name!r} is a {found.kind} model; this step handles LMs and encoders (tensor models: `maas quantize`)"
        )
    return Source(found, open_model_files(local_path(found)))


def default_name(source: Source, suffix: str) -> str:
    """`name:suffix` for a registry source, `<file stem>:suffix` for a path."""
    base = parse_ref(source.found.source)[0] if source.parent_ref else source.found.name
    return f"{base}:{suffix}"


def read_calibration(path: str | Path | None, tokens: int) -> tuple[str | None, dict[str, Any]]:
    """Calibration text read once: (its contents, what the lineage records of it: file name, sha256
    digest, tokens used); (None, {}) without a file."""
    if path is None:
        return None, {}
    try:
        raw = Path(path).read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidRequestError(f"cannot read --calibration {str(path)!r}: {e}") from None
    digest = f"sha256:{hashlib.sha256(raw).hexdigest()}"
    return text, {"calibration": Path(path).name, "calibration_digest": digest, "calibration_tokens": tokens}


def write_tokenizer(files: ModelFiles, out: Path) -> None:
    """Copy an HF directory's tokenizer and side files, or write a GGUF model's tokenizer as
    tokenizer.json + tokenizer_config.json + generation_config.json."""
    if files.format != "gguf":
        for p in files.path.rglob("*"):
            rel = p.relative_to(files.path)
            if p.is_file() and rel.name != "config.json" and not p.name.endswith(_WEIGHT_FILES):
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, out / rel)
        return
    from maas.text.tokenizer import Tokenizer

    src = files.tokenizer
    Tokenizer.from_source(src).hf.save(str(out / "tokenizer.json"))
    tc: dict[str, Any] = {
        "bos_token": src.bos_token,
        "eos_token": src.eos_token,
        "add_bos_token": src.add_bos_token,
    }
    if src.chat_template:
        tc["chat_template"] = src.chat_template
    (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2))
    (out / "generation_config.json").write_text(json.dumps({"eos_token_id": src.eos_token_ids}))


def save_version(
    source: Source,
    config: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    operation: str,
    parameters: dict[str, Any],
    name: str | None,
    suffix: str,
    metrics: dict[str, Any] | None = None,
) -> VersionInfo:
    """Write the directory, import it as `name` (default `<parent name>:<suffix>`), record the lineage."""
    from safetensors.torch import save_file

    ref = name or default_name(source, suffix)
    parse_ref(ref)  # a bad name fails before any work is written
    if source.parent_ref is None:
        parameters = {**parameters, "source": source.found.source}
    reg = Registry()
    tmp = Path(tempfile.mkdtemp(prefix="compress-", dir=reg.home))
    try:
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})  # fmt: skip
        write_tokenizer(source.files, tmp)
        return reg.import_path(tmp, ref, parent=source.parent_ref, operation=operation,
                               metrics=metrics, parameters=parameters)  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
