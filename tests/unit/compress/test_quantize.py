import json

import pytest
import torch
from safetensors.torch import save_file

from maas.compress.methods import compress
from maas.compress.output import write_tokenizer
from maas.compress.quantize import quantize_files
from maas.engine.llm.loader import load_lm
from maas.errors import InvalidRequestError
from maas.formats import open_model_files
from maas.kernels.quantized import QuantLinear, TiedQuantEmbedding
from tests.gguf_util import tiny_model, write_gguf
from tests.unit.formats.test_hf import save_hf

IDS = torch.tensor([[1, 2, 3, 40, 50, 60, 70, 80]])


def _write(files, d, method, group, include_head=False):
    config, tensors, report = quantize_files(files, int(method[3:]), group, include_head=include_head)
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(d / "model.safetensors"))
    write_tokenizer(files, d)
    return d, report


def _logits(model):
    with torch.inference_mode():
        return model(IDS)[0]


@pytest.mark.parametrize(
    ("method", "group", "tol"), [("int8", 32, 0.01), ("int8", None, 0.02), ("int4", 32, 0.15)]
)
def test_quantized_directory_loads_into_quantized_layers(tmp_path, method, group, tol):
    model = tiny_model()
    src = save_hf(tmp_path / "src", model)
    d, report = _write(open_model_files(src), tmp_path / "q", method, group)
    lm = load_lm(d, "cpu", "float32")
    layers = {n: m for n, m in lm.model.named_modules() if isinstance(m, QuantLinear)}
    assert (
        report["layers"] == len(layers) == 7 * model.config.num_hidden_layers + 1
    )  # + the head (288 rows: too few for the embedding)
    assert all(m.scheme.bits == (8 if name == "lm_head" else int(method[3:])) for name, m in layers.items())
    ref, got = _logits(model), _logits(lm.model)
    assert float((got - ref).norm() / ref.norm()) < tol
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() > 0.7
    lm.model.fuse_projections()  # the engine fuses q/k/v and gate/up: same answers
    torch.testing.assert_close(_logits(lm.model), got, rtol=1e-4, atol=1e-4)
    size = (d / "model.safetensors").stat().st_size
    assert size < (src / "model.safetensors").stat().st_size * (0.45 if method == "int8" else 0.35)


def test_gguf_q4_blocks_carry_over_without_loss_and_a_tied_head_is_stored_once(tmp_path):
    model = tiny_model(tie_word_embeddings=True)
    path = write_gguf(tmp_path / "m.gguf", model, "Q4_1")
    files = open_model_files(path)
    d, report = _write(files, tmp_path / "q", "int4", 32, include_head=True)  # the head's Q4_1 blocks too
    assert report["lossless_from_gguf"] == report["layers"]
    lm, float_lm = load_lm(d, "cpu", "float32"), load_lm(path, "cpu", "float32")
    q = lm.model.model.layers[0].self_attn.q_proj  # Q rows un-permuted like the float loader's
    assert isinstance(q, QuantLinear)
    torch.testing.assert_close(q.weight(), float_lm.model.model.layers[0].self_attn.q_proj.weight)
    assert isinstance(lm.model.model.embed_tokens, TiedQuantEmbedding)
    torch.testing.assert_close(_logits(lm.model), _logits(float_lm.model), rtol=1e-4, atol=1e-4)
    d, report = _write(files, tmp_path / "q8", "int4", 32)  # by default the tied head is kept at 8 bits
    assert report["layers_at_8_bits"] == ["lm_head"] and report["lossless_from_gguf"] == report["layers"] - 1
    head = load_lm(d, "cpu", "float32").model.lm_head
    assert isinstance(head, QuantLinear) and head.scheme.bits == 8


def test_quantized_model_is_refused_a_second_time_and_bad_groups_are_refused(tmp_path):
    src = save_hf(tmp_path / "src", tiny_model())
    d, _ = _write(open_model_files(src), tmp_path / "q", "int8", 32)
    with pytest.raises(InvalidRequestError, match="quantized already"):
        quantize_files(open_model_files(d), 4, 32)
    with pytest.raises(InvalidRequestError, match="no layer fits groups of 7"):
        quantize_files(open_model_files(src), 4, 7)


def test_int4_keeps_the_embedding_and_the_head_at_8_bits_unless_asked(tmp_path):
    model = tiny_model(vocab_size=1024)  # a vocabulary large enough to quantize
    files = open_model_files(save_hf(tmp_path / "src", model))
    vocab = ["model.embed_tokens", "lm_head"]
    errors = {}
    for include_head in (False, True):
        d, report = _write(files, tmp_path / f"q{include_head}", "int4", 32, include_head)
        lm = load_lm(d, "cpu", "float32")
        bits = {n: m.scheme.bits for n, m in lm.model.named_modules() if isinstance(m, QuantLinear)}
        assert {n: bits[n] for n in vocab} == {n: 4 if include_head else 8 for n in vocab}
        assert bits["model.layers.0.mlp.down_proj"] == 4
        assert report.get("layers_at_8_bits") == (None if include_head else vocab)
        ref = _logits(model)
        errors[include_head] = float((_logits(lm.model) - ref).norm() / ref.norm())
    assert errors[False] < errors[True], errors


def test_include_head_is_a_4_bit_option(tiny_registry):
    info = compress("quantize", "tiny:base", "int4", include_head=True)
    assert info.tag == "int4-g32-head4" and "layers_at_8_bits" not in (info.parameters or {})
    with pytest.raises(InvalidRequestError, match=r"int8 takes no --include-head \(int4, gptq, awq do\)"):
        compress("quantize", "tiny:base", "int8", include_head=True)


def test_result_is_a_registry_version_with_lineage(tmp_path, tiny_registry):
    reg, _ = tiny_registry
    info = compress("quantize", "tiny:base", "int4", group_size=32)
    assert (info.name, info.tag, info.operation, info.parent) == ("tiny", "int4-g32", "quantize", "tiny:base")
    assert info.parameters is not None and info.parameters["method"] == "int4"
    again = compress("quantize", "tiny:base", "int8", "tiny:small", group_size="channel")
    assert again.tag == "small" and again.parameters and again.parameters["group_size"] == "channel"
    assert [a["model"] for a in (again.lineage or [])] == ["tiny:base"]
    assert info.size < reg.show("tiny:base").size * 0.35  # the files really shrink (tokenizer included)
    lm = load_lm(reg.path_for("tiny:int4-g32"), "cpu", "float32")
    assert any(isinstance(m, QuantLinear) for m in lm.model.modules())


@pytest.mark.parametrize(("bits", "group"), [(4, 32), (8, 32), (4, 64)])
def test_gptq_keeps_the_layer_outputs_closer_than_rounding_to_nearest(bits, group):
    from maas.compress.gptq import gptq
    from maas.kernels.quant_codes import Scheme, dequantize, quantize_weight

    torch.manual_seed(0)
    mix = torch.randn(128, 128) * torch.linspace(0.1, 3, 128)  # correlated inputs of uneven size
    x = torch.randn(2048, 128) @ mix
    w = torch.randn(64, 128)
    scheme = Scheme(bits, group)
    out = {}
    for name, stored in (("rtn", quantize_weight(w, scheme)), ("gptq", gptq(w, x.T @ x, scheme))):
        assert {k: v.dtype for k, v in stored.items()} == {
            k: v.dtype for k, v in quantize_weight(w, scheme).items()
        }
        q = dequantize(stored["qweight"], stored["scales"], stored.get("mins"))
        out[name] = float((x @ q.T - x @ w.T).norm() / (x @ w.T).norm())
    assert out["gptq"] < out["rtn"] * 0.8, out


@pytest.mark.parametrize("bits", [4, 8])
def test_refitting_scales_to_the_outputs_never_loses_and_more_rounds_help(bits):
    from maas.compress.gptq import _output_error, gptq, refit_groups
    from maas.kernels.quant_codes import Scheme, dequantize, quantize_weight, unpack_nibbles

    torch.manual_seed(1)
    x = torch.randn(2048, 128) @ (torch.randn(128, 128) * torch.linspace(0.1, 3, 128))
    H, w = x.T @ x, torch.randn(48, 128)
    stored = quantize_weight(w, Scheme(bits, 32))
    q = stored["qweight"] if bits == 8 else unpack_nibbles(stored["qweight"])
    scales, mins = refit_groups(w, H, q.float(), stored["scales"], stored.get("mins"), 32)
    codes = q.double().reshape(48, 4, 32)
    before = _output_error(w.double(), H.double(), codes, stored["scales"], stored.get("mins"))
    after = _output_error(w.double(), H.double(), codes, scales, mins)
    assert bool((after <= before).all()) and float(after.sum()) < float(before.sum()) * 0.98

    def error(rounds: int) -> float:
        st = gptq(w, H, Scheme(bits, 32), rounds=rounds)
        return float((x @ dequantize(st["qweight"], st["scales"], st.get("mins")).T - x @ w.T).norm())

    assert error(3) < error(1)


def test_calibrated_quantization_runs_gptq_and_records_the_data(tmp_path, tiny_registry):
    reg, model = tiny_registry
    calib = tmp_path / "calib.txt"
    calib.write_text("pack my box with five dozen liquor jugs\n" * 30)
    info = compress("quantize", "tiny:base", "gptq", calibration=calib, calibration_tokens=512)
    p = info.parameters or {}
    assert info.tag == "int4-g32-gptq" and p["algorithm"] == "gptq" and p["layers_at_8_bits"] == ["lm_head"]
    assert p["gptq_layers"] == p["layers"] - 1  # the head, kept at 8 bits, is rounded to nearest
    assert p["calibration_digest"].startswith("sha256:") and p["calibration_tokens"] == 512
    lm = load_lm(reg.path_for("tiny:int4-g32-gptq"), "cpu", "float32")
    ref, got = _logits(model), _logits(lm.model)
    assert float((got - ref).norm() / ref.norm()) < 0.15
    f32 = compress("quantize", "tiny:base", "float16")
    assert f32.tag == "float16" and f32.size < reg.show("tiny:base").size * 0.7
    with pytest.raises(InvalidRequestError, match=r"float32 takes no --calibration \(gptq"):
        compress("quantize", "tiny:base", "float32", calibration=calib)


def test_gemma_versions_keep_their_norms(tmp_path, tiny_registry):
    """Gemma checkpoints store norm weights as w in x * (1 + w): a version written by compression must too."""
    from tests.unit.models.test_family_parity import hf_model, maas_logits
    from tests.unit.models.test_family_parity import save_hf as save_gemma

    reg, _ = tiny_registry
    save_gemma(hf_model("gemma3"), tmp_path / "gemma")
    reg.import_path(tmp_path / "gemma", "gemma:base")
    want = maas_logits(tmp_path / "gemma")
    torch.testing.assert_close(
        maas_logits(reg.path_for(f"gemma:{compress('quantize', 'gemma:base', 'float32').tag}")), want
    )
    got = maas_logits(reg.path_for(f"gemma:{compress('quantize', 'gemma:base', 'int8').tag}"))
    assert float((got - want).norm() / want.norm()) < 0.02
