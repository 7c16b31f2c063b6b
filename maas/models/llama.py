"""Decoder-only LMs of the Llama family: RMSNorm, RoPE, grouped-query attention, SwiGLU.

Covers Llama 2/3, Mistral, SmolLM, Qwen2 (qkv bias), Qwen3 (q/k norms per head), Phi-3 and OLMo 2 (norms
after each sublayer, q/k norms over the whole projection): the family table's row says which. Attention over past tokens is delegated to an `Attention` backend so that the same
module serves training (plain causal attention) and the serving engine (a KV cache of one slot per sequence).

    cfg = LlamaConfig.tiny(); model = LlamaForCausalLM(cfg)
    logits = model(torch.randint(0, cfg.vocab_size, (2, 8)))   # (2, 8, vocab)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from maas.errors import UnsupportedModelError
from maas.models.decoder import Attention, DecoderLM
from maas.models.embedding import embedding
from maas.models.families import Family, Norms, QKNorm, by_config
from maas.models.fuse import cat_linears
from maas.models.rope import Rope, rope_inv_freq, rope_tables, rotate_half

_PLAIN = Family("", "llm")  # the plain Llama block, for a config no row claims


@dataclass(frozen=True)
class LlamaConfig:
    """Shapes and constants of a Llama-family model (the subset of HF's config we use)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    rope_scaling: tuple[tuple[str, Any], ...] | None = None
    qk_norm: QKNorm = "none"  # RMSNorm on queries and keys before RoPE (families.QKNorm)
    norms: Norms = "pre"  # where each block's RMSNorms sit (families.Norms)

    @classmethod
    def from_hf(cls, cfg: dict[str, Any], row: Family | None = None) -> LlamaConfig:
        """Build from an HF config.json dict (or the dict a GGUF reader produces) and the family's row of
        the table (found from `model_type` when not given)."""
        row = row or by_config(cfg) or _PLAIN
        n_heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        params = cfg.get("rope_parameters")  # transformers 5 writes rope_theta and the scaling here
        params = params if isinstance(params, dict) and "rope_theta" in params else {}
        scaling = cfg.get("rope_scaling") or (
            params if params.get("rope_type", "default") != "default" else None
        )
        kind = (scaling.get("rope_type") or scaling.get("type")) if isinstance(scaling, dict) else None
        if kind not in (None, "default", "linear", "llama3"):
            raise UnsupportedModelError(f"RoPE scaling {kind!r} is not supported (linear, llama3)")
        if float(cfg.get("partial_rotary_factor", 1.0)) != 1.0:
            raise UnsupportedModelError(
                "partial rotary embeddings (partial_rotary_factor < 1) are not supported"
            )
        context = int(cfg.get("max_position_embeddings", 2048))
        window = cfg.get("sliding_window")
        if window and cfg.get("use_sliding_window", row.use_sliding_window):
            context = min(context, int(window))  # attention here is full: stay inside the window
        return cls(
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(cfg["intermediate_size"]),
            num_hidden_layers=int(cfg["num_hidden_layers"]),
            num_attention_heads=n_heads,
            num_key_value_heads=int(cfg.get("num_key_value_heads") or n_heads),
            head_dim=int(cfg.get("head_dim") or hidden // n_heads),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
            rope_theta=float(params.get("rope_theta", cfg.get("rope_theta", 10000.0))),
            max_position_embeddings=context,
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            attention_bias=bool(cfg.get("attention_bias", row.attention_bias)),
            rope_scaling=tuple(sorted(scaling.items())) if isinstance(scaling, dict) else None,
            qk_norm=row.qk_norm,
            norms=row.norms,
        )

    def to_hf(self) -> dict[str, Any]:
        """The HF config.json dict that from_hf reads back (rope scaling aside)."""
        return {
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
        }

    @classmethod
    def tiny(cls, **kw: Any) -> LlamaConfig:
        """A small random-weight config for tests."""
        base: dict[str, Any] = dict(
            vocab_size=256,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=512,
            tie_word_embeddings=True,
        )
        base.update(kw)
        return cls(**base)


class CausalAttention:
    """Plain causal self-attention over a (B, T) batch, no cache: for training and references."""

    def __call__(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None = None
    ) -> torch.Tensor:
        B, T, H, D = q.shape
        qq, kk, vv = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if window is None or window >= T:
            out = F.scaled_dot_product_attention(qq, kk, vv, is_causal=True, enable_gqa=True)  # (B, H, T, D)
        else:
            pos = torch.arange(T, device=q.device)
            mask = (pos.unsqueeze(0) <= pos.unsqueeze(1)) & (pos.unsqueeze(0) > pos.unsqueeze(1) - window)
            out = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask, enable_gqa=True)
        return out.transpose(1, 2).reshape(B, T, H * D)


class RMSNorm(nn.Module):
    """Root-mean-square layer norm with a learned scale."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.weight.dtype:  # a bf16 / fp16 model keeps its norm scales in float32 (the loader)
            return F.rms_norm(x.float(), (x.shape[-1],), self.weight, self.eps).to(x.dtype)
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class SelfAttention(nn.Module):
    """Grouped-query self-attention with rotary position embeddings."""

    def __init__(self, cfg: LlamaConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv, self.hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        bias = cfg.attention_bias
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * self.hd, bias=bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.hd, bias=bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.hd, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.hd, cfg.hidden_size, bias=False)
        self.qkv_proj: nn.Module | None = None  # set by `fuse_projections`
        self.qk_norm = cfg.qk_norm
        if cfg.qk_norm != "none":  # one scale per head dimension, or one per output of the whole projection
            whole = cfg.qk_norm == "projection"
            self.q_norm = RMSNorm(self.hd * (self.n_heads if whole else 1), cfg.rms_norm_eps)
            self.k_norm = RMSNorm(self.hd * (self.n_kv if whole else 1), cfg.rms_norm_eps)
        self.window: int | None = None  # sliding-window layers (Gemma 3) see only this many positions
        self.q_scale = 1.0  # multiplies queries when the attention scale is not 1/sqrt(head_dim)

    def fuse(self) -> None:
        """Replace q/k/v projections by one matmul (same math, fewer and larger GEMMs)."""
        try:
            fused = cat_linears([self.q_proj, self.k_proj, self.v_proj])
        except (TypeError, ValueError):  # stored differently (a GGUF mixing block formats): stay apart
            return
        self.qkv_proj = fused
        del self.q_proj, self.k_proj, self.v_proj

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn: Attention) -> torch.Tensor:
        lead = x.shape[:-1]
        H, KV, hd = self.n_heads, self.n_kv, self.hd
        if self.qkv_proj is not None:
            qk, v = self.qkv_proj(x).split([(H + KV) * hd, KV * hd], dim=-1)
        else:
            qk, v = torch.cat([self.q_proj(x), self.k_proj(x)], dim=-1), self.v_proj(x)
        if self.qk_norm == "projection":  # over all of a row's query (key) heads at once
            q, k = qk.split([H * hd, KV * hd], dim=-1)
            qk = torch.cat([self.q_norm(q), self.k_norm(k)], dim=-1)
        qk = qk.view(*lead, H + KV, hd)  # rotate queries and keys together
        if self.qk_norm == "head":
            q, k = qk.split([H, KV], dim=-2)
            qk = torch.cat([self.q_norm(q), self.k_norm(k)], dim=-2)
        cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)  # (*lead, 1, hd)
        qk = qk * cos + rotate_half(qk) * sin
        q, k = qk.split([H, KV], dim=-2)  # (*lead, H, hd), (*lead, KV, hd)
        if self.q_scale != 1.0:
            q = q * self.q_scale
        return self.o_proj(attn(self.layer, q, k, v.view(*lead, KV, hd), self.window))


class MLP(nn.Module):
    """SwiGLU feed-forward."""

    act = "silu"  # the gate's activation

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.gate_up_proj: nn.Module | None = None  # set by `fuse_projections`

    def fuse(self) -> None:
        """Replace gate and up projections by one matmul."""
        try:
            fused = cat_linears([self.gate_proj, self.up_proj])
        except (TypeError, ValueError):
            return
        self.gate_up_proj = fused
        del self.gate_proj, self.up_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is not None:
            g, u = self.gate_up_proj(x).chunk(2, dim=-1)
            return self.down_proj(F.silu(g) * u)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


# HF names of a block's norms by placement: before attention, after it, before the MLP, after it.
NORM_NAMES: dict[str, tuple[str | None, str | None, str | None, str | None]] = {
    "pre": ("input_layernorm", None, "post_attention_layernorm", None),
    "sandwich": (
        "input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"
    ),
    "post": (None, "post_attention_layernorm", None, "post_feedforward_layernorm"),
}  # fmt: skip


class DecoderLayer(nn.Module):
    """Attention and MLP, each with a residual and RMSNorms where `cfg.norms` places them."""

    sliding = False  # attends over a sliding window with the local RoPE table (Gemma 3's local layers)
    mlp_class: Any = MLP
    self_attn: SelfAttention
    mlp: MLP

    def __init__(self, cfg: LlamaConfig, layer: int):
        super().__init__()
        self.norm_names = NORM_NAMES[cfg.norms]
        attn_in, attn_out, mlp_in, mlp_out = self.norm_names
        sublayers = [(attn_in, None), ("self_attn", SelfAttention(cfg, layer)), (attn_out, None),
                     (mlp_in, None), ("mlp", self.mlp_class(cfg)), (mlp_out, None)]  # fmt: skip
        for name, module in sublayers:  # in the order they run (parameters() and state dicts list them so)
            if name is not None:
                self.add_module(
                    name, RMSNorm(cfg.hidden_size, cfg.rms_norm_eps) if module is None else module
                )

    def norms(self) -> list[Any]:
        """The norms before attention, after it, before the MLP and after it (None where there is none)."""
        return [None if n is None else getattr(self, n) for n in self.norm_names]

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn: Attention) -> torch.Tensor:
        attn_in, attn_out, mlp_in, mlp_out = self.norms()
        h = self.self_attn(x if attn_in is None else attn_in(x), cos, sin, attn)
        x = x + (h if attn_out is None else attn_out(h))
        h = self.mlp(x if mlp_in is None else mlp_in(x))
        return x + (h if mlp_out is None else mlp_out(h))


class LlamaModel(nn.Module):
    """Embeddings, decoder layers (`layer(cfg, index)` each) and the final norm (HF names, so HF state
    dicts load as-is)."""

    def __init__(self, cfg: LlamaConfig, layer: Any = DecoderLayer):
        super().__init__()
        self.embed_tokens = embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(layer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LlamaForCausalLM(DecoderLM):
    """The full LM. `forward` returns hidden states or logits; `logits` projects hidden states."""

    config: LlamaConfig
    inv_freq: torch.Tensor
    layer_class: Any = DecoderLayer  # what each decoder layer is (a family with another block sets its own)

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.config = cfg
        self.model = LlamaModel(cfg, self.layer_class)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.register_buffer("inv_freq", rope_inv_freq(cfg), persistent=False)

    def fuse_projections(self) -> None:
        """Inference transformation: q/k/v and gate/up become single matmuls (HF names are lost)."""
        for layer in self.model.layers:
            layer.self_attn.fuse()  # type: ignore[union-attr,operator]
            layer.mlp.fuse()  # type: ignore[union-attr,operator]

    def tie_weights(self) -> None:
        """Share the input embedding with the output projection when the config says so."""
        if self.config.tie_word_embeddings:
            self.share_embeddings()

    def share_embeddings(self) -> None:
        """The output projection reads the input embedding's weight."""
        self.lm_head.weight = self.model.embed_tokens.weight

    def materialize_buffers(self, device: torch.device) -> None:
        """RoPE frequencies (not stored in checkpoints) computed on `device`."""
        self.inv_freq = (
            rope_inv_freq(self.config).to(device) if self.inv_freq.is_meta else self.inv_freq.to(device)
        )

    def rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (*lead,) -> cos, sin (*lead, head_dim)."""
        return rope_tables(positions, self.inv_freq, dtype)

    def rope_pair(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[Rope, Rope]:
        """(cos, sin) for global layers and for sliding-window ones (the same here; Gemma 3 differs)."""
        rope = self.rope(positions, dtype)
        return rope, rope

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids (*lead,) -> the first layer's input (*lead, hidden)."""
        return self.model.embed_tokens(input_ids)  # type: ignore[no-any-return]

    def hidden_states(
        self, input_ids: torch.Tensor, positions: torch.Tensor | None = None, attn: Attention | None = None
    ) -> torch.Tensor:
        """input_ids (*lead,) -> final-normed hidden states (*lead, hidden)."""
        if positions is None:
            positions = torch.arange(input_ids.shape[-1], device=input_ids.device).expand_as(input_ids)
        attn = attn or CausalAttention()
        x = self.embed(input_ids)
        rope_global, rope_local = self.rope_pair(positions, x.dtype)
        for layer in self.model.layers:
            cos, sin = rope_local if layer.sliding else rope_global  # type: ignore[union-attr]
            x = layer(x, cos, sin, attn)
        return self.model.norm(x)

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor | None = None, attn: Attention | None = None
    ) -> torch.Tensor:
        """input_ids (B, T) -> logits (B, T, vocab)."""
        return self.lm_head(self.hidden_states(input_ids, positions, attn))
