"""Model files -> (config, tensors, tokenizer source). No knowledge of serving or training.

Names are imported lazily so that light users (the store reading a GGUF header) do not pay for torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ModelFiles", "TokenizerSource", "open_model_files"]


def __getattr__(name: str) -> Any:
    if name in ("ModelFiles", "TokenizerSource"):
        from maas.formats import base

        return getattr(base, name)
    if name == "open_model_files":
        from maas.formats.detect import open_model_files

        return open_model_files
    raise AttributeError(name)
