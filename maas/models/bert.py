"""BERT-family encoders (BERT, MiniLM, and the variants sentence-transformers models use).

Module names follow Hugging Face's BertModel so that safetensors load without renaming.
`forward` takes padded ids and a mask and returns the last hidden states; pooling lives with
the embedder, not here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from maas.errors import UnsupportedModelError


@dataclass(frozen=True)
class BertConfig:
    """The fields of an HF BertConfig that shape the network."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> BertConfig:
        """From a config.json dict (unknown keys ignored; unsupported variants refused)."""
        names = {f.name for f in fields(cls)}
        c = cls(**{k: v for k, v in cfg.items() if k in names})
        if c.position_embedding_type != "absolute":
            raise UnsupportedModelError(
                f"position_embedding_type {c.position_embedding_type!r} is not supported"
            )
        if c.hidden_act not in _ACTS:
            raise UnsupportedModelError(
                f"hidden_act {c.hidden_act!r} is not supported (supported: {sorted(_ACTS)})"
            )
        return c

    @classmethod
    def tiny(cls, **kw: Any) -> BertConfig:
        """A small config for tests."""
        base: dict[str, Any] = dict(
            vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
            max_position_embeddings=64,
        )  # fmt: skip
        return cls(**{**base, **kw})


_ACTS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, H); token type 0 everywhere (single-segment inputs)."""
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = (
            self.word_embeddings(ids)
            + self.position_embeddings(pos)[None]
            + self.token_type_embeddings.weight[0]
        )
        return self.LayerNorm(x)


class BertSelfAttention(nn.Module):
    """Multi-head self-attention projections (HF names: query, key, value)."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)


class BertDenseNorm(nn.Module):
    """dense -> (+ residual) -> LayerNorm, HF's BertSelfOutput / BertOutput."""

    def __init__(self, n_in: int, n_out: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(n_in, n_out)
        self.LayerNorm = nn.LayerNorm(n_out, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    """Self-attention plus its output projection and norm."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(c)
        self.output = BertDenseNorm(c.hidden_size, c.hidden_size, c.layer_norm_eps)
        self.n_heads = c.num_attention_heads
        self.qkv: nn.Linear | None = None  # set by fuse_qkv()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, H = x.shape
        if self.qkv is not None:
            q, k, v = self.qkv(x).split(H, dim=-1)
        else:
            q, k, v = self.self.query(x), self.self.key(x), self.self.value(x)
        hd = H // self.n_heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, T, self.n_heads, hd).transpose(1, 2)  # (B, n_heads, T, hd)

        a = F.scaled_dot_product_attention(
            heads(q), heads(k), heads(v), attn_mask=mask, scale=1 / math.sqrt(hd)
        )
        return self.output(a.transpose(1, 2).reshape(B, T, H), x)


class BertIntermediate(nn.Module):
    """The feed-forward up-projection and activation."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)
        self.act = _ACTS[c.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class BertLayer(nn.Module):
    """One encoder block (post-norm)."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.attention = BertAttention(c)
        self.intermediate = BertIntermediate(c)
        self.output = BertDenseNorm(c.intermediate_size, c.hidden_size, c.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    """The stack of encoder blocks."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(c) for _ in range(c.num_hidden_layers))


class BertModel(nn.Module):
    """Embeddings + encoder; returns the last hidden states (no pooler head)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids and (B, T) 1/0 mask -> (B, T, H) hidden states."""
        x = self.embeddings(ids)
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T): keys that may be attended to
        for layer in self.encoder.layer:
            x = layer(x, mask)  # (B, T, H)
        return x

    def fuse_qkv(self) -> BertModel:
        """Inference transformation: one (H -> 3H) projection per layer instead of three."""
        for layer in self.encoder.layer:
            assert isinstance(layer, BertLayer)
            s = layer.attention.self
            fused = nn.Linear(s.query.in_features, 3 * s.query.out_features, device=s.query.weight.device)
            with torch.no_grad():
                fused.weight.copy_(torch.cat([s.query.weight, s.key.weight, s.value.weight]))
                fused.bias.copy_(torch.cat([s.query.bias, s.key.bias, s.value.bias]))
            layer.attention.qkv = fused
            del layer.attention.self
        return self

    def load_hf_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load HF BertModel weights (with or without a `bert.` prefix; pooler and heads ignored)."""
        sd = {}
        for name, t in tensors.items():
            name = name.removeprefix("bert.")
            if name.startswith(("embeddings.", "encoder.")) and not name.endswith("position_ids"):
                sd[name] = t
        missing, unexpected = self.load_state_dict(sd, strict=False, assign=True)
        if missing or unexpected:
            raise UnsupportedModelError(
                f"the weights do not fit a BERT encoder: missing {missing[:4]}, unexpected {unexpected[:4]}"
            )
