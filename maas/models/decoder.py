"""DecoderLM: the contract every decoder-LM family's module keeps. The serving engine, the loader and
the trainer call nothing else on a decoder, so a new family is a subclass and a table row."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class DecoderLM(nn.Module):
    """A causal LM: hidden states for token ids, an output projection, embeddings that may be tied."""

    config: Any  # the family's config (num_hidden_layers, num_key_value_heads, head_dim, vocab_size, ...)
    lm_head: nn.Linear

    def hidden_states(
        self, input_ids: torch.Tensor, positions: torch.Tensor | None = None, attn: Any = None
    ) -> torch.Tensor:
        """input_ids (*lead,) -> final-normed hidden states (*lead, hidden); `attn` is the attention
        implementation (engine/llm/attention.py's slot attention when serving; plain causal by default)."""
        raise NotImplementedError

    def share_embeddings(self) -> None:
        """Make the output projection share the input embedding's weight."""
        raise NotImplementedError

    def materialize_buffers(self, device: torch.device) -> None:
        """Rebuild non-persistent buffers (none by default) after loading onto `device` from meta."""

    def fuse_projections(self) -> None:
        """Inference transformation fusing matmuls that read the same input (none by default)."""
