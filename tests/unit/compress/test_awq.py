"""AWQ: scales that lower a layer's output error below round to nearest, folded into the ops before without
changing the model's function, and a saved version that is an ordinary int4 model."""

from __future__ import annotations

import pytest
import torch

from maas.compress.awq import clip_round, fold, output_error, search_scale, sites
from maas.compress.methods import compress
from maas.compress.model import Stats, float_state
from maas.engine.llm.loader import load_lm
from maas.kernels.quant_codes import Scheme, dequantize, quantize_weight
from maas.kernels.quantized import QuantLinear
from maas.models.families import by_name
from tests.gguf_util import tiny_model

IDS = torch.tensor([[1, 2, 3, 40, 50, 60, 70, 80]])


def _stats(x: torch.Tensor) -> Stats:
    return Stats(x.shape[0], (x * x).sum(0), x.abs().sum(0), x.T @ x)


def test_awq_scales_lower_a_layers_output_error_below_round_to_nearest():
    torch.manual_seed(0)
    x = torch.randn(4096, 128)
    x[:, :4] *= 30  # a few loud input channels, as LLM activations have
    w = torch.randn(96, 128)
    scheme = Scheme(4, 32)

    def error(stored, s):
        q = dequantize(stored["qweight"], stored["scales"], stored.get("mins")) / s
        return float((x @ q.T - x @ w.T).norm() / (x @ w.T).norm())

    rtn = error(quantize_weight(w, scheme), torch.ones(128))
    alpha, s = search_scale([w], [scheme], _stats(x))
    awq = error(quantize_weight(w * s, scheme), s)
    clipped = error(clip_round(w * s, scheme, (x / s).T @ (x / s)), s)
    assert 0 < alpha <= 1 and awq < rtn * 0.8, (alpha, awq, rtn)
    assert clipped <= awq * 1.001, (clipped, awq)


def test_on_a_tiny_models_layers_awq_lowers_the_output_error_below_round_to_nearest(tmp_path):
    from maas.compress.model import activation_stats
    from maas.formats import open_model_files
    from tests.unit.formats.test_hf import save_hf

    model = tiny_model()
    files = open_model_files(save_hf(tmp_path / "m", model))
    text = "pack my box with five dozen liquor jugs, then the quick brown fox jumps\n" * 40
    stats = activation_stats(model, files, text, 2048, outer=True)
    scheme, rtn, awq = Scheme(4, 32), 0.0, 0.0
    for site in sites(model, by_name("llama")):
        ws = [model.get_submodule(n).weight.detach() for n in site.layers]
        st = stats[site.layers[0]]
        assert st.outer is not None
        alpha, s = search_scale(ws, [scheme] * len(ws), st, site.kv_heads, site.share)
        errors = [sum(output_error(w, t, scheme, st.outer) for w in ws) for t in (torch.ones_like(s), s)]
        assert errors[1] <= errors[0] * (1 + 1e-6), (site, alpha, errors)  # alpha 0 is round to nearest
        rtn, awq = rtn + errors[0], awq + errors[1]
    assert awq < rtn * 0.99, (awq, rtn)  # random weights: no outlier channels, a small gain


def test_folding_keeps_the_models_function():
    model = tiny_model()  # 4 query heads over 2 key heads: o_proj's scales are shared per key head
    torch.manual_seed(1)
    tensors = float_state(model)
    for site in sites(model, by_name("llama")):
        width = model.get_submodule(site.layers[0]).in_features
        s = torch.rand(width) * 4 + 0.25
        if site.kv_heads:
            s = s.view(site.kv_heads, site.share, -1)[:, :1].expand(-1, site.share, -1).reshape(-1)
        fold(tensors, site, s)
    folded = tiny_model()
    folded.load_state_dict(tensors, strict=False)
    assert not torch.equal(
        folded.model.layers[0].self_attn.v_proj.weight, model.model.layers[0].self_attn.v_proj.weight
    )
    with torch.no_grad():
        torch.testing.assert_close(folded(IDS), model(IDS), rtol=1e-4, atol=1e-4)


def test_awq_version_is_an_int4_model_served_like_one(tmp_path, tiny_registry):
    reg, model = tiny_registry
    calib = tmp_path / "calib.txt"
    calib.write_text("the five boxing wizards jump quickly over a lazy dog\n" * 40)
    info = compress("quantize", "tiny:base", "awq", calibration=calib, calibration_tokens=1024)
    p = info.parameters or {}
    assert (info.tag, p["method"], p["algorithm"], p["bits"]) == ("int4-g32-awq", "awq", "awq", 4)
    assert p["awq_sites"] == 4 * model.config.num_hidden_layers and p["calibration_tokens"] == 1024
    rtn = compress("quantize", "tiny:base", "int4")
    lms = {t: load_lm(reg.path_for(f"tiny:{t}"), "cpu", "float32") for t in ("int4-g32-awq", "int4-g32")}
    spec = lms["int4-g32-awq"].files.config["quantization_config"]
    assert (
        spec.keys() == lms["int4-g32"].files.config["quantization_config"].keys()
    )  # nothing for a loader to add
    down = lms["int4-g32-awq"].model.model.layers[0].mlp.down_proj
    assert (
        isinstance(down, QuantLinear) and down.scheme == Scheme(4, 32) and down._q4 is not None
    )  # block kernel
    with torch.no_grad():
        ref = model(IDS)[0]
        err = {t: float((lm.model(IDS)[0] - ref).norm() / ref.norm()) for t, lm in lms.items()}
    assert err["int4-g32-awq"] < 0.15 and rtn.size == pytest.approx(info.size, rel=0.05), err
