"""GGUF block formats: the torch reference against gguf-py's dequantizer (bit for bit), the native kernel
(its AVX2 build, and its AVX-512 build where the CPU has one) against the reference (random blocks, odd
shapes, 1 and many rows) and against itself in a batch; packing the weights into one huge-page arena."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from maas.kernels import blocks, native
from maas.kernels.blocks import FORMATS, BlockEmbedding, BlockLinear, dequantize

# where each format keeps its fp16 fields (d, and dmin / m where it has one)
_HALF_FIELDS = {
    "Q4_0": [0],
    "Q4_1": [0, 2],
    "Q5_0": [0],
    "Q5_1": [0, 2],
    "Q8_0": [0],
    "Q4_K": [0, 2],
    "Q5_K": [0, 2],
    "Q6_K": [208],
}


def random_blocks(fmt: str, n: int, k: int, seed: int = 0) -> torch.Tensor:
    """(n, row bytes) rows of random blocks: every code, scale byte and bit pattern random, fp16 fields
    finite (some zero, some tiny, some large)."""
    f = FORMATS[fmt]
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(n * (k // f.qk), f.nbytes), dtype=np.uint8)
    for off in _HALF_FIELDS[fmt]:
        h = (rng.standard_normal(len(raw)) * rng.choice([1e-4, 1e-2, 1.0, 30.0], len(raw))).astype(np.float16)
        h[:: max(1, len(h) // 7)] = 0
        raw[:, off : off + 2] = h.view(np.uint8).reshape(-1, 2)
    return torch.from_numpy(raw.reshape(n, f.row_bytes(k)))


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_reference_matches_gguf_py_bit_for_bit(fmt: str) -> None:
    import gguf

    k = FORMATS[fmt].qk * 3
    raw = random_blocks(fmt, 5, k)
    ours = dequantize(raw, fmt, k).numpy()
    theirs = gguf.quants.dequantize(raw.numpy(), gguf.GGMLQuantizationType[fmt])
    assert ours.shape == theirs.shape == (5, k)
    np.testing.assert_array_equal(ours.view(np.uint32), theirs.astype(np.float32).view(np.uint32))


needs_native = pytest.mark.skipif(
    blocks.native() is None, reason="the native kernel is not built (maas kernels build)"
)


@lru_cache
def _build(isa: str) -> Any | None:
    return native.load(native.BUILDS[f"maas_block_linear_{isa}"])


@pytest.fixture(params=["avx2", "avx512"])
def isa(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Each build of the kernel this CPU runs, as the one the layers call."""
    if request.param == "avx512" and not native.cpu_has_avx512():
        pytest.skip("this CPU has no AVX-512")
    ext = _build(request.param)
    if ext is None:
        pytest.skip("the native kernel is not built (maas kernels build)")
    assert ext.lanes == (16 if request.param == "avx512" else 8)
    monkeypatch.setattr(blocks, "native", lambda: ext)
    return ext


def test_the_wide_build_is_taken_where_the_cpu_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAAS_NATIVE_ISA", raising=False)
    assert native.wide() == native.cpu_has_avx512()
    monkeypatch.setenv("MAAS_NATIVE_ISA", "avx2")
    assert not native.wide()


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_native_rows_are_the_reference_values(fmt: str, isa: Any) -> None:
    k = FORMATS[fmt].qk * 2
    raw = random_blocks(fmt, 9, k, seed=1)
    layer = BlockLinear(raw, fmt, k)
    ids = torch.tensor([8, 0, 3, 3])
    np.testing.assert_array_equal(layer.rows(ids).numpy(), dequantize(raw, fmt, k)[ids].numpy())


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("m,n", [(1, 1), (1, 37), (2, 5), (3, 19), (7, 33), (40, 17)])
def test_native_matches_reference(fmt: str, m: int, n: int, isa: Any) -> None:
    k = FORMATS[fmt].qk * (3 if FORMATS[fmt].qk == 32 else 2)
    raw = random_blocks(fmt, n, k, seed=m * 100 + n)
    bias = torch.randn(n)
    layer = BlockLinear(raw, fmt, k, bias)
    x = torch.randn(m, k)
    w = dequantize(raw, fmt, k).double()
    want = F.linear(x.double(), w, bias.double())
    got = layer(x)
    scale = (x.double().abs() @ w.abs().T).max().item() + 1.0
    assert (got.double() - want).abs().max().item() <= 1e-5 * scale


@pytest.mark.parametrize("fmt", ["Q4_0", "Q4_1", "Q5_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K"])
def test_a_row_gets_the_same_bits_alone_or_in_any_batch(fmt: str, isa: Any) -> None:
    k = 512
    layer = BlockLinear(random_blocks(fmt, 70, k, seed=3), fmt, k)
    x = torch.randn(41, k)
    full = layer(x)
    for rows in ([5], [0, 1], [2, 3, 4], list(range(9)), list(range(17, 41))):
        assert torch.equal(layer(x[rows]), full[rows])


def test_reference_fallback_without_native(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = random_blocks("Q4_K", 6, 256, seed=4)
    layer = BlockLinear(raw, "Q4_K", 256)
    monkeypatch.setattr(blocks, "native", lambda: None)
    x = torch.randn(3, 256)
    torch.testing.assert_close(layer(x), x @ dequantize(raw, "Q4_K", 256).T)


def test_concat_and_embedding() -> None:
    a = BlockLinear(random_blocks("Q8_0", 4, 64, seed=5), "Q8_0", 64)
    b = BlockLinear(random_blocks("Q8_0", 3, 64, seed=6), "Q8_0", 64, torch.ones(3))
    fused = BlockLinear.concat([a, b])
    x = torch.randn(2, 64)
    torch.testing.assert_close(fused(x), torch.cat([a(x), b(x)], dim=-1))
    with pytest.raises(ValueError, match="same block format"):
        BlockLinear.concat([a, BlockLinear(random_blocks("Q4_0", 2, 64), "Q4_0", 64)])
    emb = BlockEmbedding(a)
    ids = torch.tensor([[3, 1], [0, 0]])
    assert torch.equal(emb(ids), a.weight()[ids])
    with pytest.raises(ValueError, match="need"):
        BlockLinear(torch.zeros(2, 10, dtype=torch.uint8), "Q4_0", 64)


def test_pack_moves_every_block_layer_into_one_arena_with_the_same_results() -> None:
    head = BlockLinear(random_blocks("Q8_0", 40, 64, seed=7), "Q8_0", 64)
    model = nn.ModuleDict(
        {
            "a": BlockLinear(random_blocks("Q4_1", 7, 64, seed=8), "Q4_1", 64, torch.randn(7)),
            "b": BlockLinear(random_blocks("Q6_K", 5, 256, seed=9), "Q6_K", 256),
            "head": head,
            "embed": BlockEmbedding(head, tied=True),  # reads the head's rows
            "norm": nn.LayerNorm(64),
        }
    )
    x64, x256, ids = torch.randn(3, 64), torch.randn(2, 256), torch.tensor([39, 0, 5])
    before = [model["a"](x64), model["b"](x256), model["head"](x64), model["embed"](ids)]
    old = [model[n].blocks for n in ("a", "b", "head")]
    moved = blocks.pack(model)
    assert moved == sum(-(-t.numel() // 64) * 64 for t in old)
    arena = model.block_arena
    start = torch.frombuffer(arena, dtype=torch.uint8).data_ptr()
    for name, was in zip(("a", "b", "head"), old, strict=True):
        now = model[name].blocks
        assert torch.equal(now, was) and now.data_ptr() != was.data_ptr()
        assert start <= now.data_ptr() < start + len(arena) and now.data_ptr() % 64 == 0
    after = [model["a"](x64), model["b"](x256), model["head"](x64), model["embed"](ids)]
    for b, a in zip(before, after, strict=True):
        assert torch.equal(a, b)
    assert blocks.pack(nn.Linear(4, 4)) == 0  # nothing in block formats: nothing to move
