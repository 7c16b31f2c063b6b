"""Attention over the KV cache for a flattened batch of decodes and prefill chunks.

Every running sequence owns a cache slot: a contiguous (n_kv, max_len, head_dim) region per
layer, so decodes attend to a plain view of the cache (no gather). Slots are allocated lowest
first, so the decodes of a step sit in the first few slots; rows of that view that are not
decoding this step get a dummy query and are ignored. The memory is reserved but only touched
as tokens are written (the block manager's budget decides how much may be in use at once).

The runner lays a step's tokens out flat: first one token per decoding sequence, then the
chunks of sequences still prefilling.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from maas.engine.llm.kv_cache import CopyOp
from maas.errors import MaasError
from maas.kernels.mapped import anonymous


@dataclass
class PrefillChunk:
    """Tokens [offset, offset + n) of the flat batch, at positions [start, start + n) of `slot`."""

    offset: int
    n: int
    start: int
    slot: int


@dataclass
class AttentionMetadata:
    """Where a step's tokens go in the cache and what each attends to."""

    slots: torch.Tensor  # (T,) cache slot of every new token
    positions: torch.Tensor  # (T,) position of every new token
    num_decodes: int
    decode_slots: torch.Tensor | None  # (D,) slot of each decode
    decode_rows: int  # S: decodes attend over cache slots [0, S)
    decode_len: int  # L: longest decode context
    decode_mask: torch.Tensor | None  # (S, 1, 1, L) True where visible; None when all see L
    decode_lens: torch.Tensor | None  # (S,) positions each decode row sees (sliding-window layers)
    decode_in_order: bool  # decode i sits in slot i
    prefills: list[PrefillChunk]


class KVCache:
    """Per-layer key and value tensors of shape (num_slots, n_kv, max_len, head_dim), and the prefix
    cache's block pool, (pool_blocks, n_kv, block_size, head_dim) per layer."""

    def __init__(
        self,
        num_layers: int,
        num_slots: int,
        max_len: int,
        n_kv: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
        pool_blocks: int = 0,
        block_size: int = 16,
    ):
        shape = (num_slots, n_kv, max_len, head_dim)
        if device.type == "cuda":  # allocated (and zeroed) whole there: say so before the allocator fails
            need = (
                2
                * num_layers
                * (num_slots * max_len + pool_blocks * block_size)
                * n_kv
                * head_dim
                * dtype.itemsize
            )
            free = torch.cuda.mem_get_info(device)[0]
            if need > free:
                raise MaasError(
                    f"the KV cache needs {need / 2**30:.1f} GiB on {device} and {free / 2**30:.1f} GiB are free: "
                    "lower --max-num-seqs or --max-model-len"
                )
        self._maps: list[mmap.mmap] = []
        self.k = [self._zeros(shape, dtype, device) for _ in range(num_layers)]
        self.v = [self._zeros(shape, dtype, device) for _ in range(num_layers)]
        pool = (pool_blocks, n_kv, block_size, head_dim)
        self.pool_k = [self._zeros(pool, dtype, device) for _ in range(num_layers)] if pool_blocks else []
        self.pool_v = [self._zeros(pool, dtype, device) for _ in range(num_layers)] if pool_blocks else []
        self.block_size = block_size

    def copy_blocks(self, ops: list[CopyOp], released: list[int] | None = None) -> None:
        """Saves (slot rows -> pool blocks), each released slot's memory given back to the system once its
        saves are done (so that a step in which many sequences finish does not hold their rows and their
        saved copies at once), then loads (pool blocks -> slot rows), every layer; blocks at consecutive
        positions of one slot move in one indexed copy."""
        saves = list({o.block: o for o in ops if o.save}.values())  # a block saved twice: the last wins
        loads = [o for o in ops if not o.save]
        pending = set(released or [])
        runs = _runs(saves, self.block_size)  # sorted by slot: a slot's runs are consecutive
        for i, (slot, start, blocks, _) in enumerate(runs):
            self._copy(slot, start, blocks, save=True)
            if slot in pending and (i + 1 == len(runs) or runs[i + 1][0] != slot):
                pending.discard(slot)
                self.release([slot])
        self.release(sorted(pending))
        for slot, start, blocks, src in _runs(loads, self.block_size):
            self._copy(slot, start, blocks, save=False, src_slot=src)

    def _copy(self, slot: int, start: int, blocks: list[int], save: bool, src_slot: int = -1) -> None:
        """One run of blocks at consecutive positions of `slot`, every layer, into (save) or out of the pool,
        or (src_slot >= 0) out of the same positions of another slot."""
        m, bs = len(blocks), self.block_size
        rows = slice(start, start + m * bs)
        if src_slot >= 0:
            for c in self.k + self.v:
                c[slot, :, rows] = c[src_slot, :, rows]
            return
        idx = torch.tensor(blocks, device=self.k[0].device)
        for cache, pool in ((self.k, self.pool_k), (self.v, self.pool_v)):
            for c, p in zip(cache, pool, strict=True):
                if save:  # (kv, m*bs, hd) -> (m, kv, bs, hd)
                    p.index_copy_(0, idx, c[slot, :, rows].unflatten(1, (m, bs)).transpose(0, 1))
                else:
                    c[slot, :, rows] = p.index_select(0, idx).transpose(0, 1).flatten(1, 2)

    def release(self, slots: list[int]) -> None:
        """Give the pages of `slots` back to the system (they read as zeros until written again)."""
        if not slots or not self._maps:
            return
        page = mmap.PAGESIZE
        slot_maps = self._maps[: len(self.k) + len(self.v)]  # the block pool's maps come after
        for buf, t in zip(slot_maps, self.k + self.v, strict=True):
            per_slot = t[0].numel() * t.element_size()
            for slot in slots:
                start = -(-slot * per_slot // page) * page  # whole pages inside the slot's range
                end = (slot + 1) * per_slot // page * page
                if end > start:
                    buf.madvise(mmap.MADV_DONTNEED, start, end - start)

    def _zeros(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        if device.type != "cpu":
            return torch.zeros(shape, dtype=dtype, device=device)
        # An anonymous mapping: zero pages, committed 4 KiB at a time as positions are written. (numpy's
        # and torch's large zeroed buffers are either written at once or advised into 2 MiB huge pages,
        # which commit a slot's whole range when one position is written.)
        buf, t = anonymous(shape, dtype)
        self._maps.append(buf)
        return t

    @property
    def num_bytes(self) -> int:
        """Memory reserved by the cache and its block pool (committed only as they fill)."""
        return sum(t.numel() * t.element_size() for t in self.k + self.v + self.pool_k + self.pool_v)


def _runs(ops: list[CopyOp], block_size: int) -> list[tuple[int, int, list[int], int]]:
    """Ops grouped into (slot, first position, blocks, source slot) runs of consecutive positions."""
    out: list[tuple[int, int, list[int], int]] = []
    for o in sorted(ops, key=lambda o: (o.slot, o.start)):
        last = out[-1] if out else None
        if (
            last
            and (last[0], last[3]) == (o.slot, o.src_slot)
            and o.start == last[1] + len(last[2]) * block_size
        ):
            last[2].append(o.block)
        else:
            out.append((o.slot, o.start, [o.block], o.src_slot))
    return out


class SlotAttention:
    """The `Attention` backend the engine hands to the model for one step."""

    def __init__(self, cache: KVCache, meta: AttentionMetadata):
        self.cache = cache
        self.meta = meta
        self._window_masks: dict[int, torch.Tensor | None] = {}

    def _decode_mask(self, window: int | None) -> torch.Tensor | None:
        """The decode rows' mask; with a sliding window, only the last `window` positions are visible."""
        m = self.meta
        if window is None or m.decode_len <= window or m.decode_lens is None:
            return m.decode_mask
        if window not in self._window_masks:  # shared by every layer with this window
            ar = torch.arange(m.decode_len, device=m.decode_lens.device).unsqueeze(0)
            lens = m.decode_lens.unsqueeze(1)
            self._window_masks[window] = ((ar < lens) & (ar >= lens - window)).view(-1, 1, 1, m.decode_len)
        return self._window_masks[window]

    def __call__(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None = None
    ) -> torch.Tensor:
        # q: (T, H, hd); k, v: (T, KV, hd); window: attend to the last `window` positions only
        m = self.meta
        kc, vc = self.cache.k[layer], self.cache.v[layer]  # (slots, KV, max_len, hd)
        k, v = k.to(kc.dtype), v.to(kc.dtype)  # as the cache holds them (a float16 cache: rounded) ...
        kc[m.slots, :, m.positions], vc[m.slots, :, m.positions] = k, v
        k, v = k.to(q.dtype), v.to(q.dtype)  # ... so that every row sees the same keys and values
        T, H, D = q.shape
        out = q.new_empty(T, H, D)
        nd = m.num_decodes
        if nd:
            assert m.decode_slots is not None
            S, L, KV = m.decode_rows, m.decode_len, kc.shape[1]
            # a slot's query heads that share a key head are that head's queries (S, KV, H / KV, hd): no
            # `enable_gqa`, which with a mask leaves CUDA's fused kernels for one that copies K and V per head
            if m.decode_in_order:  # decodes fill slots 0..S-1 in order: no scatter/gather
                qq = q[:nd].reshape(S, KV, H // KV, D)
            else:
                qq = q.new_zeros(S, KV, H // KV, D)
                qq[m.decode_slots] = q[:nd].reshape(nd, KV, H // KV, D)
            o = F.scaled_dot_product_attention(
                qq,
                kc[:S, :, :L].to(q.dtype),
                vc[:S, :, :L].to(q.dtype),
                attn_mask=self._decode_mask(window),
            ).view(S, H, D)
            out[:nd] = o if m.decode_in_order else o[m.decode_slots]
        prefill_attention(q, kc, vc, m.prefills, window, out)
        return out.view(T, H * D)


def prefill_attention(
    q: torch.Tensor,
    kc: torch.Tensor,
    vc: torch.Tensor,
    chunks: list[PrefillChunk],
    window: int | None,
    out: torch.Tensor,
) -> None:
    """Causal attention of each chunk's queries (rows of q, (T, H, hd)) over its slot's cached keys and values
    up to its last position (already written), into the same rows of `out`."""
    for c in chunks:
        qq = q[c.offset : c.offset + c.n].transpose(0, 1).unsqueeze(0)  # (1, H, n, hd)
        L = c.start + c.n
        kk = kc[c.slot : c.slot + 1, :, :L].to(q.dtype)  # (1, KV, L, hd)
        vv = vc[c.slot : c.slot + 1, :, :L].to(q.dtype)
        if c.start == 0 and (window is None or window >= L):
            o = F.scaled_dot_product_attention(qq, kk, vv, is_causal=True, enable_gqa=True)
        else:
            mask = causal_mask(c.start, L, window, q.device)
            o = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask, enable_gqa=True)
        out[c.offset : c.offset + c.n] = o[0].transpose(0, 1)


def causal_mask(start: int, end: int, window: int | None, device: torch.device) -> torch.Tensor:
    """(end - start, end): query positions start..end-1 see keys at or before them (and, with a window,
    fewer than `window` positions back)."""
    qpos = torch.arange(start, end, device=device).unsqueeze(1)
    kpos = torch.arange(end, device=device).unsqueeze(0)
    mask = kpos <= qpos
    return mask & (kpos > qpos - window) if window is not None else mask
