import pytest
import torch
from torch import nn

from maas.kernels import q8_linear
from maas.kernels.q8_linear import Q8Linear, dequantize_q8, pack_q8, quantize_q8


@pytest.fixture(scope="module")
def layer():
    torch.manual_seed(0)
    return nn.Linear(96, 64, bias=True).eval()


def test_block_quantization_roundtrip_is_close():
    w = torch.randn(16, 64)
    q, s = quantize_q8(w)
    assert q.shape == (2, 2, 32, 8) and q.dtype == torch.int8 and s.shape == (2, 2, 8)
    err = (dequantize_q8(q, s) - w).abs()
    assert (err <= s.permute(0, 2, 1).reshape(16, 2, 1).repeat(1, 1, 32).reshape(16, 64) / 2 + 1e-6).all()


def test_native_kernel_matches_reference_and_is_batch_invariant(layer):
    if q8_linear.native() is None:
        pytest.skip("no AVX2 compiler here")
    q = Q8Linear(layer)
    x = torch.randn(13, 96)
    with torch.no_grad():
        got = q(x)
        ref = torch.nn.functional.linear(x, dequantize_q8(q.qweight, q.scales), layer.bias)
        assert (got - ref).abs().max() < 1e-4
        assert (got - layer(x)).abs().max() < 0.05
        for i in (0, 5, 12):  # the same row gives the same bits alone or in any batch
            assert torch.equal(q(x[i : i + 1])[0], got[i])
        assert torch.equal(q(x[3:9])[2], got[5])


def test_pack_q8_swaps_only_eligible_layers():
    m = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    pack_q8(m)
    assert isinstance(m[0], Q8Linear) and isinstance(m[2], nn.Linear)  # 10 outputs: not a multiple of 8
