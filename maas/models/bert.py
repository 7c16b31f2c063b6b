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

    def forward(self, x: torch.Tensor, pad: Padding | None) -> torch.Tensor:
        """x: (B, T, H) when `pad` is None, else (N, H): the N real tokens of a padded (B, T) batch."""
        H = x.shape[-1]
        qkv = (
            self.qkv(x)
            if self.qkv is not None
            else torch.cat([self.self.query(x), self.self.key(x), self.self.value(x)], -1)
        )
        if pad is not None:
            qkv = pad.unpack(qkv)  # (B, T, 3H); padded rows are zeros and masked out as keys
        B, T = qkv.shape[:2]
        hd = H // self.n_heads
        q, k, v = (
            t.view(B, T, self.n_heads, hd).transpose(1, 2) for t in qkv.split(H, dim=-1)
        )  # (B, nh, T, hd)
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=pad.mask if pad else None, scale=1 / math.sqrt(hd)
        )
        a = a.transpose(1, 2).reshape(B, T, H)
        return self.output(pad.pack(a) if pad is not None else a, x)


@dataclass
class Padding:
    """Where the real tokens of a padded batch are, so dense layers skip the padding."""

    keep: torch.Tensor  # (N,) flat indices of real tokens in (B * T)
    mask: torch.Tensor  # (B, 1, 1, T) True where a key may be attended to
    B: int
    T: int

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (N, D)."""
        return x.reshape(self.B * self.T, -1)[self.keep]

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (B, T, D) with zeros at the padding."""
        out = x.new_zeros(self.B * self.T, x.shape[-1])
        out[self.keep] = x
        return out.view(self.B, self.T, -1)


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

    def forward(self, x: torch.Tensor, pad: Padding | None) -> torch.Tensor:
        x = self.attention(x, pad)
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
        x = self.embeddings(ids)  # (B, T, H)
        if attention_mask is None or bool(attention_mask.all()):
            for layer in self.encoder.layer:
                x = layer(x, None)
            return x
        B, T = ids.shape
        m = attention_mask.bool()
        pad = Padding(m.reshape(-1).nonzero().squeeze(1), m[:, None, None, :], B, T)
        x = pad.pack(x)  # (N, H): dense layers run on real tokens only
        for layer in self.encoder.layer:
            x = layer(x, pad)
        return pad.unpack(x)

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
