import pytest
import torch
from torch import nn

from maas.kernels.quant_codes import Scheme, dequantize, pack_nibbles, quantize_weight, unpack_nibbles
from maas.kernels.quantized import QuantLinear


def _layer(w: torch.Tensor, scheme: Scheme, bias: torch.Tensor | None = None) -> QuantLinear:
    N, K = w.shape
    m = QuantLinear(K, N, scheme, bias is not None)
    for k, v in quantize_weight(w, scheme).items():
        setattr(m, k, v)
    if bias is not None:
        m.bias = nn.Parameter(bias, requires_grad=False)
    return m


def test_nibbles_round_trip():
    q = torch.randint(0, 16, (5, 64), dtype=torch.uint8)
    assert pack_nibbles(q).shape == (5, 32)
    assert torch.equal(unpack_nibbles(pack_nibbles(q)), q)


@pytest.mark.parametrize(
    ("bits", "group", "tol"), [(8, 32, 0.01), (8, 64, 0.01), (4, 32, 0.1), (4, 128, 0.12)]
)
def test_round_to_nearest_error_is_bounded_by_half_a_step(bits, group, tol):
    torch.manual_seed(0)
    w = torch.randn(16, 256)
    stored = quantize_weight(w, Scheme(bits, group))
    back = dequantize(stored["qweight"], stored["scales"], stored.get("mins"))
    g = w.reshape(16, -1, group)
    span = (g.abs().amax(-1) * 2 / 254) if bits == 8 else (g.amax(-1) - g.amin(-1)) / 15
    err = (back - w).abs().reshape(16, -1, group).amax(-1)
    assert (err <= span * 0.5 + 2e-3 * g.abs().amax(-1)).all()  # half a step (plus fp16 scale rounding)
    assert float((back - w).norm() / w.norm()) < tol
    assert stored["qweight"].dtype == (torch.int8 if bits == 8 else torch.uint8)
    assert stored["qweight"].numel() == w.numel() * bits // 8  # the codes really take `bits` per weight


@pytest.mark.parametrize(("bits", "group"), [(8, 32), (8, 64), (4, 32), (4, 64), (4, 16)])
def test_prepared_layer_computes_the_dequantized_weight(bits, group):
    torch.manual_seed(1)
    w, b = torch.randn(24, 64), torch.randn(24)
    m = _layer(w, Scheme(bits, group), b)
    ref = dequantize(m.qweight, m.scales, m.mins)
    x = torch.randn(3, 5, 64)
    want = x @ ref.T + b
    m.prepare()
    if bits == 8:
        assert m._q8 is not None and m.qweight.numel() == 0  # only the kernel's copy is kept
    if bits == 4 and group % 32 == 0:  # held as Q4_1 blocks for the block kernel: the very same values
        assert m._q4 is not None and m.qweight.numel() == 0
        assert torch.equal(m.weight(), ref)
    if bits == 4 and group % 32:
        assert m._q4 is None  # groups smaller than a block: the reference
    torch.testing.assert_close(m(x), want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(m.weight(), ref)
    ids = torch.tensor([[0, 23, 7]])
    torch.testing.assert_close(m.rows(ids, torch.float32), ref[ids])


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("prepared", [False, True])
def test_concat_equals_the_parts_side_by_side(prepared, bits):
    torch.manual_seed(2)
    parts = [_layer(torch.randn(n, 64), Scheme(bits, 32), torch.randn(n)) for n in (16, 8, 8)]
    if prepared:
        for p in parts:
            p.prepare()
    x = torch.randn(4, 64)
    fused = QuantLinear.concat(parts)
    torch.testing.assert_close(fused(x), torch.cat([p(x) for p in parts], -1))


def test_layers_quantized_differently_do_not_fuse():
    a, b = _layer(torch.randn(8, 64), Scheme(8, 32)), _layer(torch.randn(8, 64), Scheme(4, 32))
    with pytest.raises(ValueError, match="quantized the same way"):
        QuantLinear.concat([a, b])
