"""HF-style model directories: config.json, *.safetensors, tokenizer.json, tokenizer_config.json."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from maas.errors import ModelFormatError, UnsupportedModelError
from maas.formats.base import ModelFiles, TokenizerSource
from maas.formats.fused import unfuse
from maas.models.families import by_model_type, supported


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"cannot read {str(path)!r}: {e}") from None
    if not isinstance(data, dict):
        raise ModelFormatError(f"{str(path)!r} does not hold a JSON object")
    return data


def _token_text(tok: Any) -> str | None:
    if isinstance(tok, dict):
        return tok.get("content")
    return tok if isinstance(tok, str) else None


def _tokenizer_source(d: Path, config: dict[str, Any]) -> TokenizerSource:
    tj = d / "tokenizer.json"
    tc = _read_json(d / "tokenizer_config.json") if (d / "tokenizer_config.json").exists() else {}
    gen = _read_json(d / "generation_config.json") if (d / "generation_config.json").exists() else {}
    eos_ids: list[int] = []
    for src in (gen.get("eos_token_id"), config.get("eos_token_id")):
        for i in src if isinstance(src, list) else [src]:
            if isinstance(i, int) and i not in eos_ids:
                eos_ids.append(i)
    template = tc.get("chat_template")
    if isinstance(template, list):  # a list of named templates: take "default"
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    if template is None and (d / "chat_template.jinja").exists():
        template = (d / "chat_template.jinja").read_text(encoding="utf-8")
    return TokenizerSource(
        tokenizer_json=tj if tj.exists() else None,
        bos_token=_token_text(tc.get("bos_token")),
        eos_token=_token_text(tc.get("eos_token")),
        eos_token_ids=eos_ids,
        add_bos_token=bool(tc.get("add_bos_token", False)),
        chat_template=template,
    )


def open_hf_dir(path: str | Path) -> ModelFiles:
    """Open an HF model directory; tensors are memory-mapped from safetensors when iterated."""
    d = Path(path)
    config = _read_json(d / "config.json")
    model_type = str(config.get("model_type", ""))
    row = by_model_type(model_type)
    if row is None or row.kind == "tensor":
        raise UnsupportedModelError(
            f"model_type {model_type!r} in {str(d / 'config.json')!r} is not supported "
            f"(supported: {', '.join(supported('llm') + supported('embedding'))})"
        )
    family = row.name
    files = sorted(d.glob("*.safetensors"))
    if not files:
        raise ModelFormatError(f"no *.safetensors files in {str(d)!r}")

    def iter_tensors() -> Iterator[tuple[str, torch.Tensor]]:
        from safetensors import SafetensorError, safe_open

        for f in files:
            try:
                with safe_open(str(f), framework="pt") as st:
                    for name in st.keys():  # noqa: SIM118 - safe_open is not a dict
                        t = st.get_tensor(name)
                        if row.norm_plus_one and name.endswith("norm.weight"):
                            t = t.float() + 1.0  # the factor the norm multiplies by
                        yield name, t
            except SafetensorError as e:
                raise ModelFormatError(f"cannot read {str(f)!r}: {e} (corrupt or truncated?)") from None

    # Validate headers now so that a corrupt file fails at open, not half-way through loading.
    from safetensors import SafetensorError, safe_open

    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                list(st.keys())
        except (SafetensorError, OSError) as e:
            raise ModelFormatError(f"cannot read {str(f)!r}: {e} (corrupt or truncated?)") from None

    return ModelFiles(
        path=d,
        format="hf",
        architecture=family,
        config=config,
        iter_tensors=(lambda: unfuse(row, config, iter_tensors())) if row.fused else iter_tensors,
        tokenizer=_tokenizer_source(d, config),
        num_bytes=sum(f.stat().st_size for f in files),
    )
