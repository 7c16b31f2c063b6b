"""Linear layers with a pre-packed path for few rows."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from maas.kernels.small_batch_linear import SmallBatchLinear, available, pack_small_batches


@pytest.mark.parametrize("mode,tol", [("float32", 1e-5), ("float16", 2e-3)])
def test_small_batches_match_float32_and_large_ones_are_unchanged(mode, tol):
    if not available(mode):
        pytest.skip(f"no {mode} kernels in this torch build")
    torch.manual_seed(0)
    lin = nn.Linear(96, 160)
    fast = SmallBatchLinear(lin, mode, max_rows=16)
    for rows in (1, 3, 16):
        x = torch.randn(rows, 96)
        want = lin(x)
        got = fast(x)
        assert (got - want).abs().max() <= tol * want.abs().max()
    assert fast.packed_bytes == 96 * 160 * (2 if mode == "float16" else 4)
    big = torch.randn(17, 96)
    assert torch.equal(fast(big), lin(big))  # past max_rows: float32, as nn.Linear computes it
    assert torch.equal(fast(big[None]), lin(big[None]))  # 3-D inputs take the float32 path too


def test_pack_swaps_every_float32_linear_and_nothing_else():
    if not available("float32"):
        pytest.skip("no oneDNN in this torch build")
    m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 4), nn.LayerNorm(4)))
    m.append(nn.Linear(4, 2).to(torch.float64))
    assert pack_small_batches(m, "float32") == 2
    assert isinstance(m[0], SmallBatchLinear) and isinstance(m[2][0], SmallBatchLinear)
    assert type(m[3]) is nn.Linear and isinstance(m[2][1], nn.LayerNorm)
    with pytest.raises(ValueError, match="unknown small-batch mode"):
        SmallBatchLinear(nn.Linear(2, 2), "int4")
