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


@dataclass(frozen=True)
class StoredBlocks:
    """A weight matrix as a GGUF file stores it: `raw` is (N, row bytes) uint8 rows of `fmt` blocks (a view
    of the file where possible) standing for a (N, K) float weight."""

    fmt: str
    raw: torch.Tensor
    shape: tuple[int, int]

    def split(self, sizes: list[int], dim: int = 0) -> list[StoredBlocks]:
        """Row ranges (a fused projection's parts), like torch.Tensor.split along rows."""
        assert dim == 0, "blocks split along rows only"
        return [
            StoredBlocks(self.fmt, raw, (raw.shape[0], self.shape[1])) for raw in self.raw.split(sizes, dim=0)
        ]


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
    # GGUF: the same tensors, block-format weights as stored (StoredBlocks) instead of dequantized
    iter_stored: Callable[[], Iterator[tuple[str, torch.Tensor | StoredBlocks]]] | None = None
    # drop this process's mapped pages of the file once the weights it needs were copied out (they are read
    # from the page cache again if touched)
    release: Callable[[], None] | None = None
