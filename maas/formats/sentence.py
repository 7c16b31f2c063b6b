"""sentence-transformers' files beside an HF encoder: modules.json, the pooling config, max length."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maas.errors import ModelFormatError, UnsupportedModelError

_POOLING = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_lasttoken": "last",
}


@dataclass(frozen=True)
class SentenceConfig:
    """How token states become one sentence vector."""

    pooling: str = "mean"  # mean | cls | max | mean_sqrt_len | last
    normalize: bool = False
    max_seq_length: int | None = None
    do_lower_case: bool = False


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"cannot read {str(path)!r}: {e}") from None


def read_sentence_config(d: str | Path) -> SentenceConfig:
    """The pipeline modules.json describes (mean pooling, no normalization when there is none)."""
    d = Path(d)
    pooling, normalize = "mean", False
    if (d / "modules.json").exists():
        modules = _json(d / "modules.json")
        if not isinstance(modules, list):
            raise ModelFormatError(f"{str(d / 'modules.json')!r} is not a list of modules")
        for m in modules:
            kind = str(m.get("type", "")).rsplit(".", 1)[-1]
            if kind == "Pooling":
                pooling = _pooling(d / str(m.get("path", "1_Pooling")) / "config.json")
            elif kind == "Normalize":
                normalize = True
            elif kind not in ("Transformer", ""):
                raise UnsupportedModelError(
                    f"sentence-transformers module {m.get('type')!r} is not supported"
                )
    elif (d / "1_Pooling" / "config.json").exists():
        pooling = _pooling(d / "1_Pooling" / "config.json")
    sb = _json(d / "sentence_bert_config.json") if (d / "sentence_bert_config.json").exists() else {}
    max_len = sb.get("max_seq_length")
    return SentenceConfig(
        pooling, normalize, int(max_len) if isinstance(max_len, int) else None, bool(sb.get("do_lower_case"))
    )


def _pooling(path: Path) -> str:
    cfg = _json(path) if path.exists() else {"pooling_mode_mean_tokens": True}
    on = [mode for key, mode in _POOLING.items() if cfg.get(key)]
    if len(on) != 1:
        raise UnsupportedModelError(
            f"{str(path)!r}: exactly one pooling mode is supported, found {on or 'none'}"
        )
    return on[0]
