"""DecoderLM: the contract every decoder-LM family's module keeps. The serving engine, the loader and
the trainer call nothing else on a decoder, so a new family is a table row (and a subclass where the
shared Llama block cannot express it)."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn


class DecoderConfig(Protocol):
    """What the engine reads of any decoder family's config."""

    @property
    def vocab_size(self) -> int: ...
    @property
    def hidden_size(self) -> int: ...
    @property
    def num_hidden_layers(self) -> int: ...
    @property
    def num_attention_heads(self) -> int: ...
    @property
    def num_key_value_heads(self) -> int: ...
    @property
    def head_dim(self) -> int: ...
    @property
    def max_position_embeddings(self) -> int: ...
    @property
    def tie_word_embeddings(self) -> bool: ...


class Attention(Protocol):
    """Attends queries to keys/values, possibly including cached past tokens."""

    def __call__(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None = None
    ) -> torch.Tensor:
        """q: (*lead, n_heads, hd); k, v: (*lead, n_kv, hd) -> (*lead, n_heads * hd). With `window`, each
        query sees only the last `window` positions (itself included)."""
        ...


class DecoderLM(nn.Module):
    """A causal LM: hidden states for token ids, an output projection, embeddings that may be tied."""

    config: DecoderConfig
    lm_head: nn.Linear

    def hidden_states(
        self, input_ids: torch.Tensor, positions: torch.Tensor | None = None, attn: Attention | None = None
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
