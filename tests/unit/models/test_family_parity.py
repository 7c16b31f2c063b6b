"""Each LLM family against Hugging Face transformers on a tiny random-weight config: the same logits from
an HF directory, and from a GGUF file where the family has one."""

from __future__ import annotations

import pytest
import torch
import transformers

from maas.engine.llm.engine import Engine, EngineConfig
from maas.engine.llm.loader import load_lm
from tests.conftest import byte_tokenizer, engine_greedy, hf_greedy
from tests.gguf_util import write_gguf

SHAPE = dict(vocab_size=264, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=256, tie_word_embeddings=False,
             rms_norm_eps=1e-6, rope_theta=50000.0)  # fmt: skip
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": None}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"sliding_window": None, "pad_token_id": 0}),
    # norms after each sublayer, q/k norms over the whole projection (its default eos id is past this vocabulary)
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {"eos_token_id": 256, "pad_token_id": 0}),
    # a local layer with a window shorter than the 40-token input, then a global one; the attention scale
    # (query_pre_attn_scalar 256) is not 1/sqrt(head_dim)
    "gemma3": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        {"sliding_window": 8, "layer_types": ["sliding_attention", "full_attention"]},
    ),
}
TOL = 2e-4


def hf_model(family: str, seed: int = 0, **overrides):
    cfg_name, cls_name, extra = FAMILIES[family]
    cfg = getattr(transformers, cfg_name)(**{**SHAPE, **extra, **overrides})
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(cfg).eval()
    with torch.no_grad():  # larger than the init's 0.02, so that differences would show in the logits
        for p in model.parameters():
            p.normal_(0.0, 0.15) if p.ndim > 1 else p.uniform_(0.5, 1.5)
    return model


def save_hf(model, path) -> None:
    """`model` as an HF directory with the byte tokenizer."""
    model.save_pretrained(path)
    byte_tokenizer().hf.save(str(path / "tokenizer.json"))


def ids() -> torch.Tensor:
    return torch.randint(0, 256, (1, 40), generator=torch.Generator().manual_seed(1))


def hf_logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(ids()).logits[0].float()


def maas_logits(path) -> torch.Tensor:
    lm = load_lm(path, device="cpu", dtype="float32")
    with torch.no_grad():
        return lm.model(ids())[0]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_hf_directory_logits_match_transformers(family, tmp_path):
    model = hf_model(family)
    save_hf(model, tmp_path)
    want, got = hf_logits(model), maas_logits(tmp_path)
    diff = float((want - got).abs().max())
    print(f"{family}: max |logit difference| {diff:.2e} (logits up to {float(want.abs().max()):.1f})")
    assert diff < TOL


@pytest.mark.parametrize(
    ("family", "arch"),
    [
        ("llama", "llama"),
        ("qwen2", "qwen2"),
        ("qwen3", "qwen3"),
        ("phi3", "phi3"),
        ("gemma3", "gemma3"),
        ("olmo2", "olmo2"),
    ],  # fmt: skip
)
def test_gguf_logits_match_transformers(family, arch, tmp_path):
    # gemma3 GGUFs carry no layer types (llama.cpp's pattern applies: every sixth layer global) and no
    # attention scale (1/sqrt(head_dim), as in every Gemma 3 but the 27B)
    six = dict(num_hidden_layers=6, layer_types=["sliding_attention"] * 5 + ["full_attention"],
               query_pre_attn_scalar=16)  # fmt: skip
    model = hf_model(family, **(six if arch == "gemma3" else {}))
    model.save_pretrained(tmp_path / "hf")
    byte_tokenizer().hf.save(str(tmp_path / "hf" / "tokenizer.json"))
    ours = load_lm(tmp_path / "hf", device="cpu", dtype="float32").model
    window = {"sliding_window": 8} if arch == "gemma3" else {}
    gguf = write_gguf(tmp_path / "m.gguf", ours, "F32", arch=arch, **window)
    diff = float((hf_logits(model) - maas_logits(gguf)).abs().max())
    print(f"{family} GGUF: max |logit difference| {diff:.2e}")
    assert diff < TOL


def test_a_sliding_window_caps_the_context_instead_of_attending_past_it():
    from maas.models.llama import LlamaConfig

    base = {**SHAPE, "max_position_embeddings": 32768}
    assert (
        LlamaConfig.from_hf({**base, "model_type": "mistral", "sliding_window": 4096}).max_position_embeddings
        == 4096
    )
    qwen2 = {**base, "model_type": "qwen2", "sliding_window": 4096, "use_sliding_window": False}
    assert LlamaConfig.from_hf(qwen2).max_position_embeddings == 32768


@pytest.mark.parametrize(
    "extra", [{"rope_scaling": {"rope_type": "longrope", "factor": 32.0}}, {"partial_rotary_factor": 0.75}]
)
def test_position_encodings_maas_does_not_compute_are_refused(extra):
    from maas.errors import UnsupportedModelError
    from maas.models.llama import LlamaConfig

    with pytest.raises(UnsupportedModelError):
        LlamaConfig.from_hf({**SHAPE, "model_type": "phi3", **extra})


def test_a_gguf_sliding_window_caps_the_context(tmp_path):
    from maas.formats.gguf import open_gguf
    from maas.models.llama import LlamaConfig

    model = hf_model("phi3")
    model.save_pretrained(tmp_path / "hf")
    byte_tokenizer().hf.save(str(tmp_path / "hf" / "tokenizer.json"))
    ours = load_lm(tmp_path / "hf", device="cpu", dtype="float32").model
    plain = write_gguf(tmp_path / "m.gguf", ours, "F32", arch="phi3")
    assert LlamaConfig.from_hf(open_gguf(plain).config).max_position_embeddings == 256
    windowed = write_gguf(tmp_path / "w.gguf", ours, "F32", arch="phi3", sliding_window=64)
    assert LlamaConfig.from_hf(open_gguf(windowed).config).max_position_embeddings == 64


@pytest.mark.parametrize("family", list(FAMILIES))
def test_bf16_logits_match_transformers_in_bf16(family, tmp_path):
    """What a GPU loads (bf16, here on the CPU): the norm scales stay float32, as transformers computes
    Gemma 3's 1 + w; the logits stay as close to transformers' bf16 model as its own rounding allows."""
    model = hf_model(family)
    save_hf(model, tmp_path)
    lm = load_lm(tmp_path, device="cpu", dtype="bfloat16")
    dtypes = {n: p.dtype for n, p in lm.model.named_parameters()}
    assert all(d == torch.float32 for n, d in dtypes.items() if "norm" in n)
    assert {d for n, d in dtypes.items() if "norm" not in n} == {torch.bfloat16}
    exact = hf_logits(model)
    with torch.no_grad():
        got = lm.model(ids())[0].float()
    theirs = hf_logits(model.to(torch.bfloat16))
    ours_err, their_err = float((got - exact).abs().max()), float((theirs - exact).abs().max())
    print(f"{family}: bf16 max |logit error| maas {ours_err:.3f}, transformers {their_err:.3f}")
    assert ours_err < 2 * their_err + 0.05


@pytest.mark.parametrize("source", ["hf", "gguf"])
def test_olmo2_is_served_on_the_pytorch_path_token_for_token(source, tmp_path):
    """OLMo 2's post-norms are a block the native decoder does not compute: the engine leaves it out and
    continues prompts exactly as transformers does, from the HF directory and from a GGUF file."""
    model = hf_model("olmo2")
    save_hf(model, tmp_path / "hf")
    path = tmp_path / "hf"
    if source == "gguf":
        path = write_gguf(
            tmp_path / "m.gguf", load_lm(path, device="cpu", dtype="float32").model, arch="olmo2"
        )
    engine = Engine.from_path(path, EngineConfig(max_model_len=128, weights="float32"))
    assert engine.runner.fused is None
    for prompt in (ids()[0, :5].tolist(), ids()[0].tolist()):
        got, want = engine_greedy(engine, prompt, 24), hf_greedy(model, prompt, 24)
        print(f"olmo2 {source}: {len(prompt)}-token prompt, engine {got[:8]}..., transformers {want[:8]}...")
        assert got == want
