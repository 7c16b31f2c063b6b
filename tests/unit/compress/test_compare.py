import pytest
import torch

from maas.compress.compare import Row, chart, parameters, table
from maas.errors import InvalidRequestError
from maas.kernels.quant_codes import Scheme, quantize_weight
from maas.kernels.quantized import QuantLinear


def test_parameters_count_quantized_weights_and_zeros():
    model = torch.nn.Sequential(torch.nn.Linear(64, 8, bias=False), torch.nn.Linear(8, 4, bias=True))
    model[0].weight.data[:, :32] = 0  # half pruned
    q = QuantLinear(8, 4, Scheme(8, 8), True)
    for k, v in quantize_weight(model[1].weight.data, Scheme(8, 8)).items():
        setattr(q, k, v)
    q.bias = torch.nn.Parameter(torch.ones(4), requires_grad=False)
    model[1] = q
    total, nonzero = parameters(model)
    assert total == 64 * 8 + 8 * 4 + 4
    assert nonzero == 32 * 8 + int(torch.count_nonzero(q.weight())) + 4


def _rows():
    return [
        Row(
            "m",
            "llm",
            "import",
            100 * 2**20,
            135_000_000,
            135_000_000,
            {"metric": "perplexity", "value": 20.9, "better": "lower"},
            {"decode_tok_s_1": 40.0, "decode_tok_s_16": 250.0},
            900 * 2**20,
        ),  # fmt: skip
        Row(
            "m:int4-g32",
            "llm",
            "quantize",
            84 * 2**20,
            135_000_000,
            134_000_000,
            {},
            {"decode_tok_s_1": 4.0, "decode_tok_s_16": 50.0},
            850 * 2**20,
        ),  # fmt: skip
    ]


def test_table_has_a_row_per_model_and_says_when_quality_is_missing():
    lines = table(_rows()).splitlines()
    assert len(lines) == 4
    assert "tok/s @1" in lines[0] and "tok/s @16" in lines[0] and "peak RSS" in lines[0]
    assert "perplexity 20.9" in lines[2] and "250.0" in lines[2] and "900.0 MiB" in lines[2]
    assert "100.0 MiB" in lines[2] and "135.0M" in lines[2] and "134.0M" in lines[3]
    assert "run maas eval" in lines[3]


def test_chart_is_a_png_and_needs_a_quality(tmp_path):
    out = chart(_rows(), tmp_path / "c.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InvalidRequestError, match="run `maas eval`"):
        chart(_rows()[1:], tmp_path / "d.png")
