"""BERT-family encoders (BERT, MiniLM, and the variants sentence-transformers models use).

Module names follow Hugging Face's BertModel so that safetensors load without renaming.
`forward` takes padded ids and a mask and returns the last hidden states; `forward_packed` takes
the sequences laid end to end (no padding in the dense layers). Pooling lives with the embedder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from maas.errors import UnsupportedModelError
from maas.models.embedding import embedding
from maas.models.fuse import cat_linears


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
        self.word_embeddings = embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """ids and positions of the same shape -> (*shape, H); token type 0 everywhere (single segments)."""
        x = (
            self.word_embeddings(ids)
            + self.position_embeddings(positions)
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
        self.qkv: nn.Module | None = None  # set by fuse_qkv()

    def forward(self, x: torch.Tensor, packing: Packing) -> torch.Tensor:
        """x: (N, H), the tokens of a batch of sequences laid end to end."""
        qkv = (
            self.qkv(x)
            if self.qkv is not None
            else torch.cat([self.self.query(x), self.self.key(x), self.self.value(x)], -1)
        )
        return self.output(packing.attend(qkv, self.n_heads), x)


@dataclass
class _Group:
    """Consecutive sequences whose attention runs as one padded batch."""

    rows: slice  # their rows in the packed (N, ...) tensor
    n: int  # sequences
    T: int  # the longest
    gather: torch.Tensor | None  # (n * T,) rows (within `rows`) of the padded layout; None: no padding
    keep: torch.Tensor | None  # real tokens' positions in the padded (n * T) layout
    mask: torch.Tensor | None  # (n, 1, 1, T) True where a key may be attended to


class Packing:
    """Where each sequence of a batch lies when its tokens are laid end to end.

    Dense layers run on the N real tokens only. Attention runs per group of consecutive
    sequences of similar length (padded within a group, so a batch of mixed lengths does not
    pay attention on the longest one's length for every sequence). Sequences sorted by length
    give the fewest groups.
    """

    def __init__(
        self,
        lengths: list[int],
        device: torch.device | None = None,
        slack: float = 1.3,
        min_waste: int = 2048,
    ):
        self.lengths = lengths
        self.groups: list[_Group] = []
        start, row = 0, 0  # first sequence of the open group, and its first row
        for i in range(1, len(lengths) + 1):
            if i == len(lengths) or _worth_splitting(lengths[start : i + 1], slack, min_waste):
                group = lengths[start:i]
                self.groups.append(_group(group, row, device))
                start, row = i, row + sum(group)
        lens = torch.tensor(lengths, device=device)
        starts = torch.cumsum(lens, 0) - lens
        self.positions = torch.arange(row, device=device) - starts.repeat_interleave(lens)  # row: all tokens

    def attend(self, qkv: torch.Tensor, n_heads: int) -> torch.Tensor:
        """(N, 3H) fused projections -> (N, H) attention outputs, each sequence seeing only itself."""
        H = qkv.shape[-1] // 3
        hd = H // n_heads
        outs = []
        for g in self.groups:
            part = qkv[g.rows]
            if g.gather is not None:
                part = part.index_select(0, g.gather)
            q, k, v = part.view(g.n, g.T, 3, n_heads, hd).permute(2, 0, 3, 1, 4)  # each (n, nh, T, hd)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=g.mask, scale=1 / math.sqrt(hd))
            a = a.transpose(1, 2).reshape(g.n * g.T, H)
            outs.append(a.index_select(0, g.keep) if g.keep is not None else a)
        return outs[0] if len(outs) == 1 else torch.cat(outs)


def _group(lens: list[int], first: int, device: torch.device | None) -> _Group:
    """The group of consecutive sequences of `lens` whose first row is `first`."""
    rows = slice(first, first + sum(lens))
    n, T = len(lens), max(lens)
    if all(L == T for L in lens):
        return _Group(rows, n, T, None, None, None)
    lt = torch.tensor(lens, device=device)
    real = torch.arange(T, device=device)[None, :] < lt[:, None]  # (n, T)
    offs = torch.cumsum(lt, 0) - lt
    gather = torch.where(real, offs[:, None] + torch.arange(T, device=device)[None, :], offs[:, None])
    # (padding reads its sequence's first row; it is masked as a key and dropped as a query)
    keep = real.reshape(-1).nonzero().squeeze(1)
    return _Group(rows, n, T, gather.reshape(-1), keep, real[:, None, None, :])


def _worth_splitting(lens: list[int], slack: float, min_waste: int) -> bool:
    """Whether the last sequence should start a new group: padding would cost too much attention
    (over `slack` times the real query-key pairs, and over `min_waste` pairs per head)."""
    T = max(lens)
    padded = len(lens) * T * T
    real = sum(L * L for L in lens)
    return padded > slack * real and padded - real > min_waste


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

    def forward(self, x: torch.Tensor, packing: Packing) -> torch.Tensor:
        x = self.attention(x, packing)
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
        """(B, T) right-padded ids and (B, T) 1/0 mask -> (B, T, H) hidden states (zeros at padding)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(ids)
        m = attention_mask.bool()
        h = self.forward_packed(ids[m], Packing(m.sum(1).tolist(), ids.device))
        out = h.new_zeros(*ids.shape, h.shape[-1])
        out[m] = h
        return out

    def forward_packed(self, ids: torch.Tensor, packing: Packing) -> torch.Tensor:
        """(N,) ids of sequences laid end to end -> (N, H) hidden states."""
        x = self.embeddings(ids, packing.positions)
        for layer in self.encoder.layer:
            x = layer(x, packing)
        return x

    def fuse_qkv(self) -> BertModel:
        """Inference transformation: one (H -> 3H) projection per layer instead of three."""
        for layer in self.encoder.layer:
            assert isinstance(layer, BertLayer)
            s = layer.attention.self
            fused = cat_linears([s.query, s.key, s.value])
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
