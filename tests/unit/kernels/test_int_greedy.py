"""The greedy LM head (csrc/int_greedy.cpp): each row's first largest logit, the one the integer kernel's own
logits give, for every format, with exact ties, odd row counts and activations that make the bound loose or
tight; most logits are never computed exactly; a layer says when it cannot answer."""

from __future__ import annotations

import pytest
import torch

from maas.kernels import blocks
from maas.kernels.blocks import FORMATS, INT_FORMATS, REPACKED, BlockLinear
from tests.unit.kernels.test_blocks import random_blocks

pytestmark = pytest.mark.skipif(
    blocks.integer_kernel() is None, reason="no integer kernel here (needs AVX-512 VNNI and a compiler)"
)


def head(fmt: str, n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """(raw blocks, tiles, format code, norms) of a random n x k head whose row 17 appears again at 2049 and
    3000 (exact ties)."""
    ext = blocks.integer_kernel()
    raw = random_blocks(fmt, n, k, seed)
    raw[2049] = raw[17]
    raw[3000] = raw[17]
    tiles = ext.int_pack(raw, FORMATS[fmt].type_id, k)
    code = REPACKED + FORMATS[fmt].type_id
    return raw, tiles, code, ext.int_head_norms(tiles, code, k)


@pytest.mark.parametrize("fmt", INT_FORMATS)
def test_the_first_largest_logit_of_every_row(fmt: str) -> None:
    ext = blocks.integer_kernel()
    n, k = 4096, 640 if FORMATS[fmt].qk == 32 else 512
    raw, tiles, code, norms = head(fmt, n, k, seed=1)
    w = blocks.dequantize(raw, fmt, k)
    assert (norms >= w.norm(dim=1)).all()  # norms bound the rows (with their mins counted twice at most)
    gen = torch.Generator().manual_seed(2)
    exact_cols = rows = 0
    for m in (1, 4, 7, 33):
        x = torch.randn(m, k, generator=gen) * torch.rand(m, 1, generator=gen) * 4
        x[0] = w[17] * 3  # its largest logits: row 17 and its copies (for most formats)
        if m > 4:
            x[4, :32] = 0  # an all-zero block
            x[5] = 0  # an all-zero row: every logit 0 (or the mins' sum): a tie across the whole head
        y = ext.int_linear(x, tiles, code, None)
        tokens, exact = ext.int_greedy(x, tiles, code, norms)
        assert torch.equal(tokens, y.max(-1).indices)
        exact_cols += exact
        rows += m
    assert exact_cols < rows * n / 16 / 10  # most tile columns were never computed exactly


def test_a_tie_goes_to_the_first_index() -> None:
    ext = blocks.integer_kernel()
    raw, tiles, code, norms = head("Q8_0", 4096, 256, seed=3)
    x = blocks.dequantize(raw, "Q8_0", 256)[17:18] * 5
    y = ext.int_linear(x, tiles, code, None)
    assert y[0, 17] == y[0, 2049] == y[0, 3000] == y.max()
    tokens, _ = ext.int_greedy(x, tiles, code, norms)
    assert tokens.tolist() == [17]


def test_a_logit_that_is_not_a_number_asks_for_all_of_them() -> None:
    ext = blocks.integer_kernel()
    _, tiles, code, norms = head("Q8_0", 4096, 64, seed=4)
    x = torch.randn(2, 64)
    x[1, 3] = float("inf")  # its row's logits: all NaN
    assert ext.int_linear(x, tiles, code, None)[1].isnan().all()
    tokens, exact = ext.int_greedy(x, tiles, code, norms)
    assert exact == -1 and tokens.numel() == 0
    layer = BlockLinear(random_blocks("Q8_0", 4096, 64, 4), "Q8_0", 64)
    blocks.pack(layer, integer=True)
    assert layer.argmax(x) is None
    assert torch.equal(layer.argmax(x[:1]), layer(x[:1]).max(-1).indices)


def test_a_layer_answers_only_where_it_can() -> None:
    raw = random_blocks("Q4_K", 64, 256, 5)
    x = torch.randn(3, 256)
    plain = BlockLinear(raw, "Q4_K", 256)  # not repacked: its outputs come from the block kernel
    assert not plain.prepare_argmax() and plain.argmax(x) is None
    biased = BlockLinear(raw, "Q4_K", 256, bias=torch.randn(64))
    blocks.pack(biased, integer=True)
    assert biased.argmax(x) is None
    layer = BlockLinear(raw, "Q4_K", 256)
    blocks.pack(layer, integer=True)
    assert layer.argmax(x.double()) is None
    assert torch.equal(layer.argmax(x), layer(x).max(-1).indices)
