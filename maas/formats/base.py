"""What every model format reader returns."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class TokenizerSource:
    """Where a tokenizer comes from: a tokenizer.json file or GGUF `tokenizer.ggml.*` fields."""

    tokenizer_json: Path | None = None
    gguf_fields: dict[str, Any] | None = None
    bos_token: str | None = None
    eos_token: str | None = None
    eos_token_ids: list[int] = field(default_factory=list)
    add_bos_token: bool = False
    chat_template: str | None = None


@dataclass
class ModelFiles:
    """A model on disk, opened: an HF-style config dict, lazy tensors with HF names, a tokenizer."""

    path: Path
    format: str  # "gguf" | "hf"
    architecture: str  # family name, e.g. "llama", "qwen2", "bert"
    config: dict[str, Any]
    iter_tensors: Callable[[], Iterator[tuple[str, torch.Tensor]]]
    tokenizer: TokenizerSource
    num_bytes: int = 0
