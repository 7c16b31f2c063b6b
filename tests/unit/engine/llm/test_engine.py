"""The engine on a tiny random model: paged cache, batching and chunking change nothing."""

import random

import pytest

from maas.engine.llm.sampling_params import SamplingParams
from maas.errors import ContextLengthError, InvalidRequestError
from tests.conftest import make_engine, reference_greedy

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)


def run_ids(engine, prompts, params=GREEDY):
    for i, p in enumerate(prompts):
        engine.add_request(f"r{i}", p, params)
    toks = {f"r{i}": [] for i in range(len(prompts))}
    while engine.has_unfinished():
        for o in engine.step():
            toks[o.request_id] += o.token_ids
    return [toks[f"r{i}"] for i in range(len(prompts))]


def prompts(n, seed=0):
    rnd = random.Random(seed)
    return [[rnd.randrange(32, 127) for _ in range(rnd.randrange(3, 40))] for _ in range(n)]


def test_paged_engine_matches_full_recompute(lm):
    ps = prompts(6)
    got = run_ids(make_engine(lm), ps)
    assert got == [reference_greedy(lm, p, 12) for p in ps]


def test_output_is_the_same_alone_or_in_a_full_batch(lm):
    ps = prompts(8, seed=1)
    alone = [run_ids(make_engine(lm), [p])[0] for p in ps]
    assert run_ids(make_engine(lm), ps) == alone


def test_chunked_prefill_and_preemption_do_not_change_outputs(lm):
    ps = prompts(8, seed=2)
    ref = run_ids(make_engine(lm), ps)
    chunked = run_ids(make_engine(lm, max_num_batched_tokens=5), ps)
    # a cache of 10 blocks of 16 tokens cannot hold 8 sequences: the scheduler preempts
    eng = make_engine(lm, kv_cache_tokens=160, max_model_len=128)
    squeezed = run_ids(eng, ps)
    assert chunked == ref and squeezed == ref
    assert eng.scheduler.num_preemptions > 0
    assert eng.scheduler.kv.num_free_blocks == eng.scheduler.kv.num_blocks


def test_stop_strings_are_never_emitted_even_across_tokens(lm):
    eng = make_engine(lm)
    p = prompts(1, seed=3)[0]
    full = eng.tokenizer.decode(reference_greedy(lm, p, 12))
    stop = full[4:7]
    assert len(stop) == 3
    eng.add_request("a", p, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, stop=(stop,)))
    chunks = []
    while eng.has_unfinished():
        for o in eng.step():
            chunks.append(o.text)
            last = o
    assert "".join(chunks) == full[: full.find(stop)]
    assert last.finished and last.finish_reason == "stop"


def test_abort_frees_the_cache_at_once(lm):
    eng = make_engine(lm)
    eng.add_request("a", [40] * 30, SamplingParams(temperature=0, max_tokens=100))
    eng.step()
    assert eng.scheduler.kv.num_free_blocks < eng.scheduler.kv.num_blocks
    eng.abort_request("a")
    assert eng.scheduler.kv.num_free_blocks == eng.scheduler.kv.num_blocks and not eng.has_unfinished()


def test_seeded_sampling_repeats(lm):
    p = prompts(1, seed=4)[0]
    sp = SamplingParams(temperature=1.0, max_tokens=16, seed=123, ignore_eos=True)
    a = run_ids(make_engine(lm), [p], sp)
    b = run_ids(make_engine(lm), [p, prompts(1, seed=9)[0]], sp)[0]
    c = run_ids(make_engine(lm), [p], sp.with_(seed=124))
    assert a[0] == b and a != c


def test_length_limits(lm):
    eng = make_engine(lm, max_model_len=64)
    with pytest.raises(ContextLengthError, match="64"):
        eng.add_request("a", [40] * 60, SamplingParams(max_tokens=10))
    with pytest.raises(ContextLengthError):
        eng.add_request("b", [40] * 64, SamplingParams(max_tokens=None))
    with pytest.raises(InvalidRequestError):
        eng.add_request("c", [100000], SamplingParams())
    eng.add_request("d", [40] * 60, SamplingParams(max_tokens=None, temperature=0, ignore_eos=True))
    outs = []
    while eng.has_unfinished():
        outs += eng.step()
    assert outs[-1].num_output_tokens == 4 and outs[-1].finish_reason == "length"


def test_eos_stops_unless_ignored(lm):
    eng = make_engine(lm)
    eos = eng.tokenizer.eos_token_ids[0]
    p = prompts(1, seed=5)[0]
    first = reference_greedy(lm, p, 1)[0]
    eng.add_request("a", p, SamplingParams(temperature=0, max_tokens=5, stop_token_ids=(first,)))
    outs = []
    while eng.has_unfinished():
        outs += eng.step()
    assert outs[-1].finish_reason == "stop" and outs[-1].num_output_tokens == 1 and outs[-1].text == ""
    assert eos == 256


def test_a_request_the_cache_cannot_hold_ends_with_length_instead_of_hanging(lm):
    eng = make_engine(lm)
    # shrink the budget below one sequence after start-up (a misconfiguration the engine must survive)
    eng.scheduler.kv._free = eng.scheduler.kv._free[:2]
    eng.scheduler.kv.num_blocks = 2
    eng.add_request("a", [40] * 50, SamplingParams(temperature=0, max_tokens=10))
    outs = []
    for _ in range(20):
        outs += eng.step()
        if not eng.has_unfinished():
            break
    assert outs and outs[-1].finished and outs[-1].finish_reason == "length"
    assert not eng.has_unfinished()


def test_cpu_only_modes_are_refused_on_a_gpu(monkeypatch):
    """`--weights` modes and 16-bit integer activations exist on the CPU only: on a GPU they are refused, not
    silently dropped (no GPU here: the device choice is stubbed; the refusal comes before any loading)."""
    import torch

    import maas.engine.llm.engine as engine_module
    from maas.engine.llm.engine import Engine, EngineConfig
    from maas.errors import UnsupportedModelError

    monkeypatch.setattr(engine_module, "pick_device", lambda *a: torch.device("cuda"))
    with pytest.raises(UnsupportedModelError, match="--weights q8 applies on the CPU"):
        Engine.from_path("unused", EngineConfig(device="cuda", weights="q8"))
    with pytest.raises(UnsupportedModelError, match="--activations int16 needs the CPU"):
        Engine.from_path("unused", EngineConfig(device="cuda", activations="int16"))
