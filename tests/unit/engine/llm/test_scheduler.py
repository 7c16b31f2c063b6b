"""Scheduler with fake sequences: no torch, no model."""

from maas.engine.llm.request import Sequence, Status
from maas.engine.llm.sampling_params import SamplingParams
from maas.engine.llm.scheduler import Scheduler

EOS = frozenset({0})


def seq(i: int, prompt_len: int, max_tokens: int = 100, **kw) -> Sequence:
    return Sequence(f"s{i}", list(range(1, prompt_len + 1)), SamplingParams(**kw), max_tokens)


def sched(num_blocks=64, block_size=4, max_num_seqs=4, budget=16, max_len=1000) -> Scheduler:
    return Scheduler(max_num_seqs, budget, max_len, num_blocks, block_size)


def step(s: Scheduler, token: int = 7):
    b = s.schedule()
    s.update(b, [token if it.sample else None for it in b.items], EOS)
    return b


def test_long_prompt_is_prefilled_in_chunks_while_decodes_keep_running():
    s = sched(budget=16)
    a = seq(0, 4)
    s.add(a)
    step(s)  # a prefilled, first token sampled
    assert len(a.output_token_ids) == 1
    b = seq(1, 40)
    s.add(b)
    sizes = []
    while b.num_computed_tokens < b.num_prompt_tokens:
        batch = step(s)
        by = {it.seq.seq_id: it.num_tokens for it in batch.items}
        assert by["s0"] == 1  # the running stream decodes every step
        sizes.append(by["s1"])
    assert sizes == [15, 15, 10]
    assert len(b.output_token_ids) == 1  # sampled only after the last chunk


def test_admission_respects_max_num_seqs_and_new_requests_join_between_steps():
    s = sched(max_num_seqs=2, budget=64)
    seqs = [seq(i, 3) for i in range(3)]
    for q in seqs:
        s.add(q)
    step(s)
    assert [q.status for q in seqs] == [Status.RUNNING, Status.RUNNING, Status.WAITING]
    s.finish(seqs[0], "abort")
    batch = step(s)
    assert {it.seq.seq_id for it in batch.items} == {"s1", "s2"}


def test_finish_on_eos_stop_token_and_length_frees_blocks():
    s = sched()
    a, b, c = seq(0, 3, max_tokens=2), seq(1, 3, stop_token_ids=(9,)), seq(2, 3)
    for q in (a, b, c):
        s.add(q)
    batch = s.schedule()
    s.update(batch, [5, 9, 0], EOS)
    assert (b.finish_reason, c.finish_reason) == ("stop", "stop")
    batch = s.schedule()
    s.update(batch, [5], EOS)
    assert a.finish_reason == "length"
    assert s.kv.num_free_blocks == s.kv.num_blocks and not s.has_unfinished()


def test_ignore_eos_keeps_going():
    s = sched()
    a = seq(0, 3, max_tokens=3, ignore_eos=True)
    s.add(a)
    for _ in range(3):
        step(s, token=0)
    assert a.output_token_ids == [0, 0, 0] and a.finish_reason == "length"


def test_preemption_when_cache_runs_out_and_recompute_later():
    # 8 blocks of 4 tokens = 32 tokens of cache; two sequences of 8 + 20 tokens each.
    s = sched(num_blocks=8, block_size=4, budget=64)
    a, b = seq(0, 8, max_tokens=20), seq(1, 8, max_tokens=20)
    s.add(a)
    s.add(b)
    step(s)  # both prefilled: 2 + 2 blocks
    preempted = []
    for _ in range(12):
        batch = step(s)
        preempted += batch.preempted
        if not s.has_unfinished():
            break
    assert b in preempted  # the later arrival gave way
    assert a.num_preemptions == 0
    # b was re-queued at the front and recomputes prompt + output once a finishes
    while s.has_unfinished():
        step(s)
    assert len(a.output_token_ids) == 20 and len(b.output_token_ids) == 20
    assert s.kv.num_free_blocks == 8


def test_max_model_len_caps_output():
    s = sched(max_len=10)
    a = seq(0, 8)
    s.add(a)
    while s.has_unfinished():
        step(s)
    assert a.num_tokens == 10 and a.finish_reason == "length"


def test_a_sequence_larger_than_the_whole_cache_finishes_instead_of_looping():
    s = sched(num_blocks=2, block_size=4)
    a = seq(0, 6, max_tokens=50)
    s.add(a)
    for _ in range(10):
        step(s)
        if not s.has_unfinished():
            break
    assert a.finish_reason == "length" and not s.has_unfinished()
