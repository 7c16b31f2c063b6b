"""Gemma 3 (text): the Llama block with four norms per layer, query/key norms, GELU-tanh MLP, embeddings
scaled by sqrt(hidden), and local layers that attend over a sliding window with their own RoPE base (every
sixth layer is global by default).

Norm weights are held as the factor they multiply by: HF checkpoints store `w` for `x * (1 + w)` (1 is
added when read), GGUF files store `1 + w` already.

    cfg, model = build_decoder("gemma3", json.load(open("config.json")))   # maas.models.architectures
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F

from maas.errors import UnsupportedModelError
from maas.models.families import Family
from maas.models.llama import MLP, DecoderLayer, LlamaConfig, LlamaForCausalLM
from maas.models.rope import Rope, rope_inv_freq, rope_tables


@dataclass(frozen=True)
class Gemma3Config(LlamaConfig):
    """LlamaConfig plus what Gemma 3 adds."""

    sliding_window: int = 512
    sliding: tuple[bool, ...] = ()  # per layer: True for local (sliding-window) attention
    rope_local_theta: float = 10000.0
    query_pre_attn_scalar: float = 256.0

    @classmethod
    def from_hf(cls, cfg: dict[str, Any], row: Family | None = None) -> Gemma3Config:
        """Build from a Gemma 3 text config.json (either the rope_parameters or the older rope_theta /
        rope_local_base_freq spelling) or the dict the GGUF reader produces, and the family's row."""
        for key in ("attn_logit_softcapping", "final_logit_softcapping"):
            if cfg.get(key):
                raise UnsupportedModelError(f"{key} is not supported (Gemma 2 style soft-capping)")
        if cfg.get("use_bidirectional_attention"):
            raise UnsupportedModelError("bidirectional attention (an encoder configuration) is not supported")
        params = cfg.get("rope_parameters") or {}
        full, local = params.get("full_attention") or {}, params.get("sliding_attention") or {}
        theta = float(full.get("rope_theta", cfg.get("rope_theta", 1_000_000.0)))
        scaling = cfg.get("rope_scaling") or (full if full.get("rope_type", "default") != "default" else None)
        base = LlamaConfig.from_hf(
            {**cfg, "sliding_window": None, "rope_theta": theta, "rope_scaling": scaling}, row
        )
        n = base.num_hidden_layers
        pattern = int(cfg.get("sliding_window_pattern") or cfg.get("_sliding_window_pattern") or 6)
        types = cfg.get("layer_types") or [
            "full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n)
        ]
        if len(types) != n:
            raise UnsupportedModelError(f"layer_types names {len(types)} layers, the model has {n}")
        return cls(
            **{f.name: getattr(base, f.name) for f in fields(LlamaConfig)},
            sliding_window=int(cfg.get("sliding_window") or 512),
            sliding=tuple(t == "sliding_attention" for t in types),
            rope_local_theta=float(local.get("rope_theta", cfg.get("rope_local_base_freq", 10000.0))),
            query_pre_attn_scalar=float(cfg.get("query_pre_attn_scalar") or base.head_dim),
        )


class GeluMLP(MLP):
    """The gated feed-forward with GELU (tanh approximation) instead of SiLU."""

    act = "gelu_tanh"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is not None:
            g, u = self.gate_up_proj(x).chunk(2, dim=-1)
        else:
            g, u = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(F.gelu(g, approximate="tanh") * u)


class Gemma3Layer(DecoderLayer):
    """The block with its row's norms (before and after each sublayer), the GELU MLP and, on local layers, a
    sliding window."""

    mlp_class = GeluMLP

    def __init__(self, cfg: Gemma3Config, layer: int):
        super().__init__(cfg, layer)
        self.sliding = cfg.sliding[layer]
        self.self_attn.window = cfg.sliding_window if self.sliding else None
        self.self_attn.q_scale = math.sqrt(cfg.head_dim / cfg.query_pre_attn_scalar)


class Gemma3ForCausalLM(LlamaForCausalLM):
    """The full Gemma 3 text LM; global layers use `inv_freq`, local ones `inv_freq_local`."""

    config: Gemma3Config
    inv_freq_local: torch.Tensor
    layer_class = Gemma3Layer

    def __init__(self, cfg: Gemma3Config):
        super().__init__(cfg)
        self.register_buffer("inv_freq_local", self._local_inv_freq(), persistent=False)
        self.embed_scale = math.sqrt(cfg.hidden_size)

    def _local_inv_freq(self) -> torch.Tensor:
        return rope_inv_freq(replace(self.config, rope_theta=self.config.rope_local_theta, rope_scaling=None))

    def materialize_buffers(self, device: torch.device) -> None:
        """Both RoPE tables on `device`."""
        super().materialize_buffers(device)
        self.inv_freq_local = (
            self._local_inv_freq().to(device)
            if self.inv_freq_local.is_meta
            else self.inv_freq_local.to(device)
        )

    def rope_pair(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[Rope, Rope]:
        """(cos, sin) of the global layers' RoPE and of the local layers'."""
        return self.rope(positions, dtype), rope_tables(positions, self.inv_freq_local, dtype)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Embeddings times sqrt(hidden), in their dtype."""
        x = self.model.embed_tokens(input_ids)
        return x * torch.tensor(self.embed_scale, dtype=x.dtype)
