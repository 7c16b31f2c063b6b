"""Model files -> (config, tensors, tokenizer source). No knowledge of serving or training."""

from maas.formats.base import ModelFiles, TokenizerSource
from maas.formats.detect import open_model_files

__all__ = ["ModelFiles", "TokenizerSource", "open_model_files"]
