"""Quantizing tensor models: convolutions as rows of codes, the layer plan, and a `maas-<arch>` directory
that loads back into quantized layers computing what its codes stand for."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from maas.compress.tensor import plan_tensor, quantize_torch_dir
from maas.errors import InvalidRequestError
from maas.kernels.quant_codes import Scheme, dequantize, quantize_weight
from maas.kernels.quantized import QuantConv2d, QuantLinear, convert
from maas.models import zoo
from maas.models.exported import load_exported


@pytest.mark.parametrize(("bits", "group"), [(8, 18), (8, 36), (4, 36)])
def test_quantized_convolution_computes_its_dequantized_filters(bits, group):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, stride=2, bias=True)
    q = convert(nn.Sequential(conv), {"modules": {"0": {"bits": bits, "group_size": group}}})[0]
    assert isinstance(q, QuantConv2d)
    stored = quantize_weight(conv.weight.detach().reshape(6, -1), Scheme(bits, group))
    q.load_state_dict({**stored, "bias": conv.bias.detach()}, assign=True)
    x = torch.randn(2, 4, 9, 9)
    w = dequantize(stored["qweight"], stored["scales"], stored.get("mins")).view(6, 4, 3, 3)
    torch.testing.assert_close(q(x), F.conv2d(x, w, conv.bias, stride=2, padding=1))
    assert q(x).shape == conv(x).shape == (2, 6, 5, 5)
    assert (q(x) - conv(x)).abs().max() < (0.05 if bits == 8 else 0.5)


def test_plan_falls_back_to_one_scale_per_channel_where_groups_do_not_fit():
    cnn = zoo.build("cnn", {"channels": [4, 8]}, input_shape=(1, 8, 8), num_classes=10)
    plan = plan_tensor(cnn, 8, 32)
    # conv over 1 channel: 9 weights a filter; 4 channels: 36; the head's 128 and 64 inputs take groups of 32
    assert {k: v.group_size for k, v in plan.items()} == {
        "features.0": 9,
        "features.3": 36,
        "head.1": 32,
        "head.3": 32,
    }
    assert "features.0" not in plan_tensor(cnn, 4, 32)  # 9 weights: no even group for two codes a byte
    rnn = zoo.build("rnn", {"cell": "lstm", "hidden_size": 16}, input_shape=(8, 8), num_classes=10)
    assert list(plan_tensor(rnn, 8, 16)) == ["head"]  # the recurrent weights stay float


@pytest.mark.parametrize(("bits", "group", "tol"), [(8, None, 0.02), (4, 32, 0.3)])
def test_quantized_directory_loads_into_quantized_layers(tmp_path, bits, group, tol):
    torch.manual_seed(0)
    src = tmp_path / "cnn"
    src.mkdir()
    meta = {
        "architecture": "cnn",
        "params": {"channels": [4, 8]},
        "input_shape": [1, 8, 8],
        "num_classes": 10,
    }
    (src / "config.json").write_text(json.dumps(meta))
    cnn = zoo.build("cnn", meta["params"], input_shape=(1, 8, 8), num_classes=10)
    save_file({k: v.contiguous() for k, v in cnn.state_dict().items()}, str(src / "model.safetensors"))
    config, tensors, _ = quantize_torch_dir(src, bits, group)
    out = tmp_path / "q"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(out / "model.safetensors"))
    q = load_exported(out)
    kinds = {n: type(m).__name__ for n, m in q.named_modules() if isinstance(m, QuantLinear)}
    assert kinds == {"features.3": "QuantConv2d", "head.1": "QuantLinear", "head.3": "QuantLinear"} | (
        {"features.0": "QuantConv2d"} if bits == 8 else {})  # fmt: skip
    assert (out / "model.safetensors").stat().st_size < (src / "model.safetensors").stat().st_size * 0.6
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert (q(x) - cnn.eval()(x)).abs().max() < tol
    with pytest.raises(InvalidRequestError, match="quantized already"):
        quantize_torch_dir(out, 8, None)
