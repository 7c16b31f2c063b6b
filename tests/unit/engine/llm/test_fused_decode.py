"""The native decoder against the PyTorch modules it replaces for decode rows (and, a layer at a time, for
prefill rows): the same greedy tokens and log-probabilities on tiny random models of each family (GGUF blocks and float32 projections, a sliding
window shorter than the text, q/k norms, biases), alone and next to a prefill in the same step, with a float32
and a float16 KV cache."""

from __future__ import annotations

import pytest

from maas.engine.llm.engine import Engine, EngineConfig
from maas.engine.llm.sampling_params import SamplingParams
from maas.kernels import blocks
from tests.conftest import byte_tokenizer
from tests.gguf_util import write_gguf
from tests.unit.models.test_family_parity import hf_model

pytestmark = pytest.mark.skipif(blocks.native() is None, reason="no native kernels (compiler)")

CASES = {  # family, GGUF block type or None for the HF directory (float32)
    "llama-q8_0": ("llama", "Q8_0"),
    "llama-q4_1": ("llama", "Q4_1"),
    "qwen2-f32": ("qwen2", None),
    "qwen2-q8_0": ("qwen2", "Q8_0"),  # biases next to block weights
    "qwen3-q4_0": ("qwen3", "Q4_0"),
    "gemma3-f32": ("gemma3", None),
    "gemma3-q8_0": ("gemma3", "Q8_0"),
    "llama-int4": ("llama", "int4"),  # `maas quantize --method int4`: held as Q4_1 blocks
}


def model_path(family: str, qtype: str | None, tmp_path, **overrides):
    from maas.engine.llm.loader import load_lm

    six = dict(num_hidden_layers=6, layer_types=["sliding_attention"] * 5 + ["full_attention"],
               query_pre_attn_scalar=16)  # fmt: skip
    model = hf_model(family, **(six if family == "gemma3" else {}), **overrides)
    model.save_pretrained(tmp_path / "hf")
    byte_tokenizer().hf.save(str(tmp_path / "hf" / "tokenizer.json"))
    if qtype is None:
        return tmp_path / "hf"
    if qtype == "int4":
        from maas.formats import open_model_files
        from tests.unit.compress.test_quantize import _write

        return _write(open_model_files(tmp_path / "hf"), tmp_path / "int4", "int4", 32)[0]
    ours = load_lm(tmp_path / "hf", device="cpu", dtype="float32").model
    extra = {"sliding_window": 8} if family == "gemma3" else {}
    return write_gguf(tmp_path / "m.gguf", ours, qtype, arch=family, **extra)


Rec = tuple[list[int], list[float], list[dict[int, float]]]  # a request's tokens, logprobs, top two at each
Run = list[Rec]


def run(path, fused: bool, together: bool, kv: str = "auto", activations: str = "auto") -> Run:
    weights = "float32" if path.is_dir() else "auto"  # float models are q8-packed by default
    config = EngineConfig(
        max_model_len=128, fused_decode=fused, weights=weights, kv_cache_dtype=kv, activations=activations
    )
    engine = Engine.from_path(path, config)
    assert (engine.runner.fused is not None) == fused
    if "int4" in path.name:  # the quantized projections run on the block kernel
        assert engine.lm.model.model.layers[0].mlp.down_proj._q4 is not None
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, logprobs=2)
    prompts = [list(range(3, 23)), [5, 9, 200, 7, 7, 1, 30, 31, 32, 33, 34, 2]]
    if not together:  # one at a time: every decode step holds decode rows only
        results = []
        for i, ids in enumerate(prompts):
            engine.add_request(f"r{i}", ids, params)
            results.append(drain(engine)[f"r{i}"])
        return results
    engine.add_request("r0", prompts[0], params)  # r0 prefills, then decodes ...
    first = drain(engine, steps=2)
    engine.add_request("r1", prompts[1], params)  # ... while r1's prefill shares its step
    out = drain(engine)
    (t0, l0, p0), (t1, l1, p1) = first["r0"], out["r0"]
    return [(t0 + t1, l0 + l1, p0 + p1), out["r1"]]


def drain(engine: Engine, steps: int = 10**6) -> dict[str, Rec]:
    got: dict[str, Rec] = {}
    while engine.has_unfinished() and steps:
        steps -= 1
        for o in engine.step():
            toks, lps, tops = got.setdefault(o.request_id, ([], [], []))
            toks += o.token_ids
            lps += [lp.logprob for lp in o.logprobs]
            tops += [dict(lp.top) for lp in o.logprobs]
    return got


def assert_same_greedy(want: Run, got: Run, tol: float, why: object) -> None:
    """The same tokens with log-probabilities within `tol`, up to a position where the two best tokens were
    within 2 tol of each other (a near tie that rounding may break either way): there either token may be
    chosen, and after a different choice the continuations part."""
    for (wt, wl, wtop), (gt, gl, gtop) in zip(want, got, strict=True):
        for i, (a, b) in enumerate(zip(wt, gt, strict=True)):
            assert abs(wl[i] - gl[i]) < tol or a != b, (why, i)
            if a != b:
                assert b in wtop[i] and wl[i] - wtop[i][b] < 2 * tol, (why, i, wtop[i], gtop[i])
                assert a in gtop[i] and gl[i] - gtop[i][a] < 2 * tol, (why, i, wtop[i], gtop[i])
                break


@pytest.mark.parametrize("case", list(CASES))
def test_fused_decode_matches_the_modules(case, tmp_path):
    path = model_path(*CASES[case], tmp_path)
    # float16 keys and values: a last-bit difference in float32 before the rounding can round a value the
    # other way (one float16 step, 1e-3 relative), hence the wider tolerance; activations rounded to 16-bit
    # blocks (the integer kernel, where the CPU has it) do the same at one step in 32639 of a block's largest
    for kv, act, tol in (("float32", "float32", 1e-4), ("float32", "auto", 2e-3), ("float16", "auto", 5e-3)):
        want = run(path, fused=False, together=False, kv=kv, activations=act)
        for together in (False, True):
            got = run(path, fused=True, together=together, kv=kv, activations=act)
            assert_same_greedy(want, got, tol, (kv, act, together))


def test_a_row_decodes_the_same_alone_or_next_to_a_prefill(tmp_path):
    path = model_path("llama", "Q4_1", tmp_path)
    alone, together = run(path, True, False), run(path, True, True)
    assert alone == together  # bit for bit: tokens and log-probabilities


@pytest.mark.skipif(blocks.integer_kernel() is None, reason="no integer kernel here (AVX-512 VNNI)")
def test_greedy_rows_get_the_heads_argmax_and_the_same_tokens(tmp_path):
    """Greedy rows without logprobs take their token from the LM head's argmax (kernels/int_greedy.cpp) instead
    of its logits: the same tokens as from the logits, next to a row that asks for logprobs in the same steps."""
    path = model_path("gemma3", "Q8_0", tmp_path, vocab_size=272)  # a head repacked in sixteens
    prompts = [list(range(3, 23)), [5, 9, 200, 7, 7, 1, 30, 31, 32, 33, 34, 2], [40] * 9]
    plain = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)

    def tokens(argmax: bool) -> tuple[dict[str, list[int]], int]:
        engine = Engine.from_path(path, EngineConfig(max_model_len=128))
        head = engine.runner._argmax
        assert head is not None  # a repacked head
        asked = []
        engine.runner._argmax = (lambda x: asked.append(len(x)) or head(x)) if argmax else None
        for i, ids in enumerate(prompts):
            engine.add_request(f"r{i}", ids, plain.with_(logprobs=1) if i == 2 else plain)
        return {k: v[0] for k, v in drain(engine).items()}, sum(asked)

    (fast, asked), (slow, _) = tokens(True), tokens(False)
    assert fast == slow
    assert asked == 2 * 24  # the two plain rows, every token; the third row's came from its logits
