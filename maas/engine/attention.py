"""Attention over a paged KV cache for a flattened batch of decodes and prefill chunks.

The runner lays a step's tokens out flat: first one token for each decoding sequence, then the
chunks of sequences still prefilling. New keys/values are written into the cache by slot, then
decodes attend together in one batched call and each prefill chunk attends on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class PrefillChunk:
    """A prefill chunk: tokens [offset, offset + n) of the flat batch, at positions [start, start + n)."""

    offset: int
    n: int
    start: int
    gather: torch.Tensor | None  # (start + n,) cache slots of its whole context, None when start == 0


@dataclass
class AttentionMetadata:
    """Where a step's tokens go in the cache and what each attends to."""

    slots: torch.Tensor  # (T,) cache slot of every new token
    num_decodes: int
    decode_gather: torch.Tensor | None  # (D, L) slots of each decode's context, padded
    decode_mask: torch.Tensor | None  # (D, 1, 1, L) True where a slot is real
    prefills: list[PrefillChunk]


class KVCache:
    """Per-layer key and value tensors of shape (num_slots, n_kv, head_dim)."""

    def __init__(
        self,
        num_layers: int,
        num_slots: int,
        n_kv: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ):
        shape = (num_slots, n_kv, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]

    @property
    def num_bytes(self) -> int:
        """Memory held by the cache."""
        return sum(t.numel() * t.element_size() for t in self.k + self.v)


class PagedAttention:
    """The `Attention` backend the engine hands to the model for one step."""

    def __init__(self, cache: KVCache, meta: AttentionMetadata):
        self.cache = cache
        self.meta = meta

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # q: (T, H, hd); k, v: (T, KV, hd)
        m = self.meta
        kc, vc = self.cache.k[layer], self.cache.v[layer]
        kc.index_copy_(0, m.slots, k)
        vc.index_copy_(0, m.slots, v)
        T, H, D = q.shape
        out = q.new_empty(T, H, D)
        nd = m.num_decodes
        if nd:
            assert m.decode_gather is not None
            B, L = m.decode_gather.shape
            flat = m.decode_gather.view(-1)
            kk = kc.index_select(0, flat).view(B, L, -1, D).transpose(1, 2)  # (B, KV, L, hd)
            vv = vc.index_select(0, flat).view(B, L, -1, D).transpose(1, 2)
            qq = q[:nd].unsqueeze(2)  # (B, H, 1, hd)
            o = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=m.decode_mask, enable_gqa=True)
            out[:nd] = o.squeeze(2)
        for c in m.prefills:
            qq = q[c.offset : c.offset + c.n].transpose(0, 1).unsqueeze(0)  # (1, H, n, hd)
            if c.gather is None:
                kk = k[c.offset : c.offset + c.n].transpose(0, 1).unsqueeze(0)  # (1, KV, n, hd)
                vv = v[c.offset : c.offset + c.n].transpose(0, 1).unsqueeze(0)
                o = F.scaled_dot_product_attention(qq, kk, vv, is_causal=True, enable_gqa=True)
            else:
                kk = kc.index_select(0, c.gather).transpose(0, 1).unsqueeze(0)  # (1, KV, start + n, hd)
                vv = vc.index_select(0, c.gather).transpose(0, 1).unsqueeze(0)
                L = c.start + c.n
                qpos = torch.arange(c.start, L, device=q.device).unsqueeze(1)
                mask = torch.arange(L, device=q.device).unsqueeze(0) <= qpos  # (n, L)
                o = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask, enable_gqa=True)
            out[c.offset : c.offset + c.n] = o[0].transpose(0, 1)
        return out.view(T, H * D)
