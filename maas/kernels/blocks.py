"""Linear layers that compute straight from GGUF block formats (the file's own weights, no re-quantizing).

    layer = BlockLinear(raw, "Q4_K", in_features=2048)   # raw: (N, row bytes) uint8, as the file stores it
    y = layer(x)                                         # native kernel (csrc/block_linear.cpp)
    w = dequantize(raw, "Q6_K", K)                       # the torch reference: (N, K) float32

Formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (blocks of 32) and Q4_K, Q5_K, Q6_K (blocks of 256). The weights the
kernel computes with are bit for bit the ones gguf-py's dequantizer gives; activations stay float32. Each
output is accumulated in the same order at any batch size (a request's answer does not depend on what else
is in the batch). Without the native kernel, the layer dequantizes and calls F.linear.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from maas.kernels.mapped import anonymous
from maas.kernels.native import cpu_flags, first_loading


@dataclass(frozen=True)
class BlockFormat:
    """One GGUF block format: its ggml type id, weights per block and bytes per block."""

    name: str
    type_id: int
    qk: int
    nbytes: int

    def row_bytes(self, k: int) -> int:
        """Bytes of a row of `k` weights."""
        return k // self.qk * self.nbytes


FORMATS = {
    f.name: f
    for f in (
        BlockFormat("Q4_0", 2, 32, 18),
        BlockFormat("Q4_1", 3, 32, 20),
        BlockFormat("Q5_0", 6, 32, 22),
        BlockFormat("Q5_1", 7, 32, 24),
        BlockFormat("Q8_0", 8, 32, 34),
        BlockFormat("Q4_K", 12, 256, 144),
        BlockFormat("Q5_K", 13, 256, 176),
        BlockFormat("Q6_K", 14, 256, 210),
    )
}


@lru_cache(maxsize=1)
def native() -> Any | None:
    """The installed extension (the AVX-512 build where the CPU has it, else AVX2), or None where it is not
    built (then the reference runs)."""
    return first_loading("block_linear")


# formats the integer kernel (csrc/int_linear.cpp) takes, by 32-weight blocks or K-quant sub-blocks, and the
# code of a repacked layer
INT_FORMATS = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K")
REPACKED = 100
AMX_MIN_ROWS = 10  # products of fewer rows take VNNI (the same bits either way)


def integer_kernel() -> Any | None:
    """The extension when it has the integer kernel and this CPU runs it (AVX-512 VNNI; AMX for many rows
    where the CPU and kernel allow it), else None."""
    ext = native()
    if ext is None or not hasattr(ext, "int_pack") or "avx512_vnni" not in cpu_flags():
        return None
    if not getattr(ext, "_maas_amx_asked", False):
        ext.int_use_amx({"amx_tile", "amx_int8"} <= cpu_flags(), AMX_MIN_ROWS)
        ext._maas_amx_asked = True
    return ext


# -- the torch reference ------------------------------------------------------------------------


def _f16(b: torch.Tensor) -> torch.Tensor:
    """(..., 2) bytes -> (...) float32."""
    return b.contiguous().view(torch.float16).squeeze(-1).float()


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """(..., n) bytes -> (..., 2n) codes: low nibbles first, then high nibbles."""
    return torch.cat([qs & 0xF, qs >> 4], dim=-1)


def _bits(qh: torch.Tensor) -> torch.Tensor:
    """(..., 4) bytes of a little-endian uint32 -> (..., 32) bits, bit e at position e."""
    shifts = torch.arange(8, dtype=torch.uint8)
    return ((qh.unsqueeze(-1) >> shifts) & 1).reshape(*qh.shape[:-1], 32)


def _scale_min_k4(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 12) packed bytes -> 6-bit scales and mins, (B, 8) each."""
    d, m, md = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = torch.cat([d & 63, (md & 0xF) | ((d >> 6) << 4)], dim=1)
    mn = torch.cat([m & 63, (md >> 4) | ((m >> 6) << 4)], dim=1)
    return sc.float(), mn.float()


def _blocks(b: torch.Tensor, fmt: str) -> torch.Tensor:
    """(B, nbytes) blocks of `fmt` -> (B, qk) float32."""
    if fmt == "Q8_0":
        return b[:, 2:].contiguous().view(torch.int8).float() * _f16(b[:, 0:2]).unsqueeze(1)
    if fmt in ("Q4_0", "Q4_1", "Q5_0", "Q5_1"):
        d = _f16(b[:, 0:2]).unsqueeze(1)
        lo = 4 if fmt in ("Q4_1", "Q5_1") else 2
        q = b[:, lo:] if fmt.startswith("Q4") else b[:, lo + 4 :]
        codes = _nibbles(q).float()
        if fmt.startswith("Q5"):
            codes = codes + 16 * _bits(b[:, lo : lo + 4]).float()
        if fmt in ("Q4_0", "Q5_0"):
            return (codes - (8 if fmt == "Q4_0" else 16)) * d
        return codes * d + _f16(b[:, 2:4]).unsqueeze(1)
    if fmt in ("Q4_K", "Q5_K"):
        d, dmin = _f16(b[:, 0:2]).unsqueeze(1), _f16(b[:, 2:4]).unsqueeze(1)
        sc, mn = _scale_min_k4(b[:, 4:16])
        qs = b[:, 16:] if fmt == "Q4_K" else b[:, 48:]
        codes = _nibbles(qs.reshape(-1, 4, 32)).reshape(-1, 8, 32).float()  # sub-block j: 32 codes
        if fmt == "Q5_K":
            qh = b[:, 16:48]  # bit j of qh[l] is the fifth bit of sub-block j's element l
            codes = (
                codes
                + 16 * ((qh.unsqueeze(1) >> torch.arange(8, dtype=torch.uint8).view(1, 8, 1)) & 1).float()
            )
        w = (d * sc).unsqueeze(-1) * codes - (dmin * mn).unsqueeze(-1)
        return w.reshape(-1, 256)
    if fmt == "Q6_K":
        ql, qh, sc = b[:, 0:128], b[:, 128:192], b[:, 192:208].contiguous().view(torch.int8).float()
        d = _f16(b[:, 208:210]).unsqueeze(1)
        low = _nibbles(ql.reshape(-1, 2, 64))  # (B, 2, 128): element h * 128 + r
        high = (
            qh.reshape(-1, 2, 1, 32) >> torch.tensor([0, 2, 4, 6], dtype=torch.uint8).view(1, 1, 4, 1)
        ) & 3
        codes = (low | (high.reshape(-1, 2, 128) << 4)).reshape(-1, 16, 16).float() - 32
        return ((d * sc).unsqueeze(-1) * codes).reshape(-1, 256)
    raise ValueError(f"unknown block format {fmt!r} (known: {', '.join(FORMATS)})")


def dequantize(raw: torch.Tensor, fmt: str, k: int) -> torch.Tensor:
    """(N, row bytes) uint8 rows of `fmt` -> the (N, k) float32 weight they stand for."""
    f = FORMATS[fmt]
    n = raw.shape[0]
    return _blocks(raw.reshape(n * (k // f.qk), f.nbytes), fmt).reshape(n, k)


# -- the layers ---------------------------------------------------------------------------------


class BlockLinear(nn.Module):
    """A linear layer whose (N, K) weight is kept in a GGUF block format and computed from it."""

    def __init__(self, raw: torch.Tensor, fmt: str, in_features: int, bias: torch.Tensor | None = None):
        super().__init__()
        f = FORMATS[fmt]
        if in_features % f.qk or raw.dim() != 2 or raw.shape[1] != f.row_bytes(in_features):
            raise ValueError(
                f"{fmt} rows of {in_features} weights need {f.row_bytes(in_features)} bytes each"
            )
        self.fmt, self.in_features, self.out_features = fmt, in_features, raw.shape[0]
        self.code = f.type_id  # what the native kernels are told; REPACKED + type_id once repacked
        self.blocks: torch.Tensor
        self.register_buffer("blocks", raw)
        self.bias = None if bias is None else nn.Parameter(bias.float(), requires_grad=False)
        self._norms: torch.Tensor | None = None  # argmax's bound, once asked for

    @property
    def repacked(self) -> bool:
        """Whether the blocks are the integer kernel's tiles (activations rounded to 16-bit blocks)."""
        return self.code >= REPACKED

    def weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dequantized (N, K) weight."""
        if self.repacked:
            return self.rows(torch.arange(self.out_features), dtype)
        return dequantize(self.blocks, self.fmt, self.in_features).to(dtype)

    def rows(self, ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Dequantized rows `ids` (*lead,) -> (*lead, K): the lookup of an embedding stored this way."""
        flat = ids.reshape(-1)
        ext = native() if self.blocks.device.type == "cpu" else None
        if ext is not None and self.repacked:
            w = ext.int_rows(self.blocks, flat.long().contiguous(), self.code, self.in_features)
        elif ext is not None:
            w = ext.block_rows(
                self.blocks, flat.long().contiguous(), FORMATS[self.fmt].type_id, self.in_features
            )
        else:
            w = dequantize(self.blocks[flat], self.fmt, self.in_features)
        return w.to(dtype).reshape(*ids.shape, self.in_features)

    def prepare_argmax(self) -> bool:
        """Get ready for `argmax` (the weights' norms its bound needs); False where it cannot run here."""
        ext = native() if self.blocks.device.type == "cpu" else None
        if ext is None or not self.repacked or self.bias is not None:
            return False
        if self._norms is None:
            self._norms = ext.int_head_norms(self.blocks, self.code, self.in_features)
        return True

    def argmax(self, x: torch.Tensor) -> torch.Tensor | None:
        """Per row of x (S, K), the index of its largest output, the one `self(x).max(-1).indices` gives,
        computing most outputs at half the integer work (csrc/int_greedy.cpp); None where it cannot (see
        prepare_argmax; x not float32; an output that is not a number): compute the outputs instead."""
        ext = native()
        if ext is None or x.dtype != torch.float32 or not self.prepare_argmax():
            return None
        tokens, exact = ext.int_greedy(
            x.reshape(-1, self.in_features).contiguous(), self.blocks, self.code, self._norms
        )
        return tokens if exact >= 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        ext = native() if self.blocks.device.type == "cpu" else None
        if ext is not None:
            bias = None if self.bias is None else self.bias.float()
            run = ext.int_linear if self.repacked else ext.block_linear
            y = run(x2.float().contiguous(), self.blocks, self.code, bias).to(x.dtype)
        else:
            y = F.linear(x2, self.weight(x.dtype), self.bias)
        return y.view(*lead, self.out_features)

    @classmethod
    def concat(cls, parts: list[BlockLinear]) -> BlockLinear:
        """One layer computing `parts` side by side (outputs concatenated); they must share a format."""
        first = parts[0]
        if any(p.repacked for p in parts):
            raise ValueError("fuse layers before repacking them")
        if any(p.fmt != first.fmt or p.in_features != first.in_features for p in parts):
            raise ValueError("only layers in the same block format can be fused")
        bias = None
        if any(p.bias is not None for p in parts):
            bias = torch.cat([p.bias if p.bias is not None else torch.zeros(p.out_features) for p in parts])
        return cls(torch.cat([p.blocks for p in parts]), first.fmt, first.in_features, bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, {self.fmt}"


class BlockEmbedding(nn.Module):
    """An embedding table kept in a GGUF block format (one row per token), or the rows of the output
    projection it is tied to."""

    def __init__(self, table: BlockLinear, dtype: torch.dtype = torch.float32, tied: bool = False):
        super().__init__()
        # tied: a list, so the head's blocks are stored once (under the head), not as a second submodule
        self._table: list[BlockLinear] = [table]
        if not tied:
            self.table = table
        self.dtype = dtype
        self.num_embeddings, self.embedding_dim = table.out_features, table.in_features

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self._table[0].rows(ids, self.dtype)


def pack(model: nn.Module, integer: bool = False) -> int:
    """Copy every block-format layer's bytes into one anonymous mapping advised into 2 MiB huge pages and
    compute from there; returns the bytes moved. The kernel streams weights faster from it than from the
    memory-mapped file's 4 KiB pages (fewer TLB misses on a stream that touches every byte once).

    With `integer` (where integer_kernel() is available), layers in INT_FORMATS whose outputs come in
    sixteens are repacked into the integer kernel's tiles (the same bytes rearranged; Q4_K and Q5_K 3%
    more): they then compute with activations rounded to 16-bit blocks of 32."""
    layers = [m for m in model.modules() if isinstance(m, BlockLinear) and m.blocks.device.type == "cpu"]
    if not layers:
        return 0
    ext = integer_kernel() if integer else None
    sources = []
    for m in layers:
        if ext is not None and m.fmt in INT_FORMATS and m.out_features % 16 == 0:
            m.code = REPACKED + FORMATS[m.fmt].type_id
            sources.append(ext.int_pack(m.blocks, FORMATS[m.fmt].type_id, m.in_features))
        else:
            sources.append(m.blocks)
    sizes = [-(-b.numel() // 64) * 64 for b in sources]  # each layer 64-byte aligned
    arena, flat = anonymous((sum(sizes),), torch.uint8, huge=True)
    offset = 0
    for m, src, size in zip(layers, sources, sizes, strict=True):
        view = flat[offset : offset + src.numel()].view(src.shape)
        view.copy_(src)
        m.blocks = view
        offset += size
    model.block_arena = arena  # type: ignore[assignment]  # (the views keep it alive too; this names it)
    return offset
