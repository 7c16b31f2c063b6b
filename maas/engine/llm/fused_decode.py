"""Rows that decode one token go through the native decoder (kernels/csrc/decode.cpp): every layer in one
call instead of some twenty PyTorch ops a layer. Built once from a loaded Llama-block model (the Llama rows,
Gemma 3) whose projections are GGUF blocks (or `maas quantize` int4 layers, held as Q4_1 blocks) or float32
on the CPU; other models (q8 / int8 / fp16 packed layers, CUDA) keep the PyTorch path. Decode rows always take
this path, whether or not a prefill shares the step, so a row's answer does not depend on its neighbours."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from maas.engine.llm.attention import KVCache, PrefillChunk, prefill_attention
from maas.kernels import blocks
from maas.kernels.blocks import FORMATS, BlockLinear
from maas.kernels.quantized import QuantLinear
from maas.models.llama import LlamaForCausalLM

Lin = tuple[torch.Tensor, int, int, int, torch.Tensor | None]
# What decode.cpp computes: a norm before each sublayer (and maybe one after), q/k norms per head, and these
# MLP gate activations (by their code). OLMo 2's rows (post-norms, q/k norms over the projection) are not.
NATIVE_NORMS = ("pre", "sandwich")
NATIVE_QK_NORMS = ("none", "head")
NATIVE_ACTS = {"silu": 0, "gelu_tanh": 1}


def _linear(m: nn.Module | None) -> Lin | None:
    """A projection as the native decoder takes it, or None when it is held some other way."""
    bias = getattr(m, "bias", None)
    bias = None if bias is None else bias.detach().float().contiguous()
    if isinstance(m, BlockLinear) and m.in_features % 16 == 0:
        return (m.blocks.contiguous(), m.code, m.out_features, m.in_features, bias)
    if type(m) is QuantLinear and m._q4 is not None:  # `maas quantize` int4, held as Q4_1 blocks
        return (m._q4.contiguous(), FORMATS["Q4_1"].type_id, m.out_features, m.in_features, bias)
    if type(m) is nn.Linear and m.weight.dtype == torch.float32 and m.in_features % 16 == 0:
        return (m.weight.detach().contiguous(), 0, m.out_features, m.in_features, bias)
    return None


def _norm(m: Any) -> torch.Tensor | None:
    return None if m is None else m.weight.detach().float().contiguous()


class FusedDecoder:
    """`hidden_states(ids, positions, slots, cache)` for decode rows and `prefill_hidden_states(..., chunks)`
    for prefill rows, equal in math to the model's own."""

    def __init__(self, model: LlamaForCausalLM, native: Any, windows: list[int | None]):
        self.model = model
        self.native = native
        self.windows = windows  # each layer's sliding window (None: full attention)

    @classmethod
    def build(cls, model: nn.Module, device: torch.device, dtype: torch.dtype) -> FusedDecoder | None:
        """The fused decoder for `model` (its KV cache float32 or float16), or None where it does not
        apply."""
        if device.type != "cpu" or dtype != torch.float32 or not isinstance(model, LlamaForCausalLM):
            return None
        ext = blocks.native()  # built (once) only where it can run
        if ext is None:
            return None
        cfg = model.config
        if cfg.head_dim % 16 or cfg.hidden_size % 16 or cfg.intermediate_size % 16:
            return None
        if cfg.norms not in NATIVE_NORMS or cfg.qk_norm not in NATIVE_QK_NORMS:
            return None  # the family row's block is one the native decoder does not compute
        layers: list[Any] = list(model.model.layers)
        first = layers[0]
        if first.mlp.act not in NATIVE_ACTS:
            return None
        dec = ext.Decoder(
            cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.hidden_size,
            cfg.intermediate_size, cfg.rms_norm_eps, NATIVE_ACTS[first.mlp.act], float(first.self_attn.q_scale),
        )  # fmt: skip
        for layer in layers:
            att, mlp = layer.self_attn, layer.mlp
            parts = [att.qkv_proj] if att.qkv_proj is not None else [att.q_proj, att.k_proj, att.v_proj]
            ups = [mlp.gate_up_proj] if mlp.gate_up_proj is not None else [mlp.gate_proj, mlp.up_proj]
            qkv, gate_up = [_linear(p) for p in parts], [_linear(p) for p in ups]
            o, down = _linear(att.o_proj), _linear(mlp.down_proj)
            if o is None or down is None or None in qkv or None in gate_up:
                return None
            q_norm, k_norm = (att.q_norm, att.k_norm) if att.qk_norm == "head" else (None, None)
            dec.add_layer(
                *[_norm(n) for n in layer.norms()], _norm(q_norm), _norm(k_norm), qkv, o, gate_up, down,
                att.window or 0, bool(layer.sliding),
            )  # fmt: skip
        norm = _norm(model.model.norm)
        if norm is not None:
            dec.set_final_norm(norm)
        return cls(model, dec, [layer.self_attn.window for layer in layers])

    def hidden_states(
        self, ids: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor, cache: KVCache
    ) -> torch.Tensor:
        """ids, positions, slots (S,) -> final-normed hidden states (S, hidden); writes the rows' keys and
        values into `cache`."""
        x, ropes = self._inputs(ids, positions)
        return self.native.forward(x, cache.k, cache.v, slots, positions, *ropes)

    def _inputs(
        self, ids: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The rows' embeddings (float32) and the global and local cos / sin tables at their positions."""
        x = self.model.embed(ids).float().contiguous()
        (cos, sin), (cos_l, sin_l) = self.model.rope_pair(positions, x.dtype)
        return x, (cos, sin, cos_l, sin_l)

    def prefill_hidden_states(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        slots: torch.Tensor,
        cache: KVCache,
        chunks: list[PrefillChunk],
        keep: list[int],
    ) -> torch.Tensor:
        """Prefill rows (`chunks` of them, offsets into these rows) a layer at a time: the native decoder's
        norms, projections, RoPE, KV write and MLP around the native prefill attention (PyTorch's where the
        build has no BLAS). Only rows `keep` (each the last row of its chunk, ascending) are read afterwards, so
        the last layer writes every row's keys and values but takes its attention and MLP for those rows alone;
        their final-normed hidden states, (len(keep), hidden)."""
        x, ropes = self._inputs(ids, positions)
        cfg = self.model.config
        T, H, hd = len(ids), cfg.num_attention_heads, cfg.head_dim
        q, att = x.new_empty(T, H, hd), x.new_empty(T, H, hd)
        attend = self._attention(chunks)
        last = len(self.windows) - 1
        for li, window in enumerate(self.windows):
            self.native.prefill_qkv(li, x, cache.k[li], cache.v[li], slots, positions, *ropes, q)
            if li == last:
                break
            attend(q, cache.k[li], cache.v[li], window, att)
            self.native.prefill_rest(li, x, att.view(T, -1))
        if not keep:
            return x[:0]
        by_end = {c.offset + c.n - 1: c for c in chunks}
        tails = [
            replace(by_end[r], offset=j, n=1, start=by_end[r].start + by_end[r].n - 1)
            for j, r in enumerate(keep)
        ]
        rows = torch.tensor(keep, dtype=torch.long)
        xk, att_k = x[rows], att[: len(keep)]
        self._attention(tails)(q[rows], cache.k[last], cache.v[last], self.windows[last], att_k)
        self.native.prefill_rest(last, xk, att_k.view(len(keep), -1))
        return self.native.normed(xk)

    def _attention(self, chunks: list[PrefillChunk]) -> Callable[..., None]:
        """attend(q, k_cache, v_cache, window, out) for these chunks: the native kernel where the build has a
        BLAS to call, else PyTorch's."""
        ext = blocks.native()
        if ext is None or not getattr(ext, "has_blas", False):
            return lambda q, kc, vc, window, out: prefill_attention(q, kc, vc, chunks, window, out)
        table = torch.tensor([[c.offset, c.n, c.start, c.slot] for c in chunks], dtype=torch.long)
        kernel = ext.prefill_attention
        return lambda q, kc, vc, window, out: kernel(q, kc, vc, table, window or 0, out)
