"""The integer kernel (csrc/int_linear.cpp): 32-weight GGUF blocks repacked into tiles, activations rounded to
16-bit blocks. Repacking keeps the file's values (bit for bit); products match a float64 reference of the same
rounding; a row's result is the same bits alone, in a batch, through VNNI or AMX; layers repack at load."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from maas.kernels import blocks
from maas.kernels.blocks import FORMATS, INT_FORMATS, REPACKED, BlockEmbedding, BlockLinear, dequantize
from tests.unit.kernels.test_blocks import random_blocks

pytestmark = pytest.mark.skipif(
    blocks.integer_kernel() is None, reason="no integer kernel here (needs AVX-512 VNNI and a compiler)"
)
LEVELS = 32639


def reference(x: torch.Tensor, raw: torch.Tensor, fmt: str, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x rounded as the kernel rounds it (per 32 values: q = round(x / (amax / LEVELS))), times the file's
    weights, summed in float64."""
    m, k = x.shape
    xb = x.reshape(m, k // 32, 32)
    d = xb.abs().amax(-1, keepdim=True) / LEVELS
    q = torch.round(xb * torch.where(d > 0, 1 / d, torch.zeros_like(d)))
    y = (q.double() * d.double()).reshape(m, k) @ dequantize(raw, fmt, k).double().T
    return y if bias is None else y + bias.double()


def packed(fmt: str, n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    raw = random_blocks(fmt, n, k, seed)
    return raw, blocks.integer_kernel().int_pack(raw, FORMATS[fmt].type_id, k)


@pytest.mark.parametrize("fmt", INT_FORMATS)
def test_repacking_keeps_the_files_values(fmt: str) -> None:
    ext = blocks.integer_kernel()
    k = 160 if FORMATS[fmt].qk == 32 else 512
    raw, tiles = packed(fmt, 48, k)
    if FORMATS[fmt].qk == 32:
        assert tiles.numel() == raw.numel()  # the same bytes, rearranged
    else:  # Q4_K / Q5_K: sub-block scales and mins as bytes (2368 bytes per 16 super-blocks, not 2304)
        assert tiles.numel() <= raw.numel() * 1.03
    rows = ext.int_rows(tiles, torch.arange(48), REPACKED + FORMATS[fmt].type_id, k)
    assert torch.equal(rows.view(torch.int32), dequantize(raw, fmt, k).view(torch.int32))


@pytest.mark.parametrize("fmt", INT_FORMATS)
@pytest.mark.parametrize("m", [1, 3, 4, 17, 40])
def test_products_match_the_reference(fmt: str, m: int) -> None:
    ext = blocks.integer_kernel()
    n, k = 64, 224 if FORMATS[fmt].qk == 32 else 512
    raw, tiles = packed(fmt, n, k, seed=m)
    gen = torch.Generator().manual_seed(m)
    x = torch.randn(m, k, generator=gen) * torch.rand(m, k // 32, 1, generator=gen).repeat_interleave(
        32, 1
    ).view(m, k)
    x[0, :32] = 0  # an all-zero block
    bias = torch.randn(n, generator=gen)
    y = ext.int_linear(x, tiles, REPACKED + FORMATS[fmt].type_id, bias)
    ref = reference(x, raw, fmt, bias)
    scale = ref.abs().max().item()
    assert (y.double() - ref).abs().max().item() <= 1e-6 * scale


@pytest.mark.parametrize("fmt", INT_FORMATS)
def test_a_row_is_the_same_bits_alone_in_a_batch_and_on_either_path(fmt: str) -> None:
    ext = blocks.integer_kernel()
    k = 96 if FORMATS[fmt].qk == 32 else 256
    raw, tiles = packed(fmt, 80, k, seed=3)
    code = REPACKED + FORMATS[fmt].type_id
    x = torch.randn(37, k, generator=torch.Generator().manual_seed(5))
    batch = ext.int_linear(x, tiles, code, None)  # many rows: AMX where the CPU has it
    alone = torch.cat([ext.int_linear(x[i : i + 1].contiguous(), tiles, code, None) for i in range(37)])
    assert torch.equal(batch.view(torch.int32), alone.view(torch.int32))
    amx = ext.int_use_amx(False, blocks.AMX_MIN_ROWS)
    try:
        vnni = ext.int_linear(x, tiles, code, None)  # every row count through VNNI
    finally:
        ext.int_use_amx(amx, blocks.AMX_MIN_ROWS)
    assert torch.equal(batch.view(torch.int32), vnni.view(torch.int32))


def test_int_pack_refuses_what_it_cannot_tile() -> None:
    ext = blocks.integer_kernel()
    raw = random_blocks("Q4_1", 24, 64)  # 24 rows: not a multiple of 16
    with pytest.raises(RuntimeError, match="multiple of 16"):
        ext.int_pack(raw, FORMATS["Q4_1"].type_id, 64)
    with pytest.raises(RuntimeError, match="row size"):
        ext.int_pack(random_blocks("Q6_K", 16, 256), FORMATS["Q6_K"].type_id, 512)


def test_layers_repack_at_load_and_keep_their_values() -> None:
    head = BlockLinear(random_blocks("Q8_0", 64, 96, 1), "Q8_0", 96)
    odd = BlockLinear(random_blocks("Q4_1", 24, 96, 2), "Q4_1", 96)  # 24 outputs: stays as stored
    kq = BlockLinear(random_blocks("Q6_K", 40, 256, 3), "Q6_K", 256)  # 40 outputs: stays
    model = nn.ModuleList([head, odd, kq, BlockEmbedding(head, tied=True)])
    want = {id(m): m.weight() for m in (head, odd, kq)}
    blocks.pack(model, integer=True)
    assert head.repacked and not odd.repacked and not kq.repacked
    for m in (head, odd, kq):
        assert torch.equal(m.weight(), want[id(m)])
    ids = torch.tensor([[0, 63], [17, 17]])
    assert torch.equal(model[3](ids), want[id(head)][ids])  # the tied embedding reads the repacked rows
    x = torch.randn(5, 96)
    ref = reference(x, random_blocks("Q8_0", 64, 96, 1), "Q8_0")
    assert (head(x).double() - ref).abs().max().item() <= 1e-6 * ref.abs().max().item()
    with pytest.raises(ValueError, match="before repacking"):
        BlockLinear.concat([head, head])


@pytest.mark.parametrize("value", ["int8", "bogus"])
def test_the_engine_refuses_unknown_activations_before_loading(value: str, tmp_path) -> None:
    from maas.engine.llm.engine import Engine, EngineConfig
    from maas.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="unknown activations"):
        Engine.from_path(tmp_path / "missing.gguf", EngineConfig(activations=value))
