"""Prefix caching on a tiny random model: the same greedy tokens as without it, with real reuse."""

import random

from maas.engine.llm.sampling_params import SamplingParams
from tests.conftest import make_engine
from tests.unit.engine.llm.test_engine import run_ids

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)


def shared_prefix_prompts(n: int, prefix_len: int, seed: int) -> list[list[int]]:
    rnd = random.Random(seed)
    system = [rnd.randrange(32, 127) for _ in range(prefix_len)]
    return [system + [rnd.randrange(32, 127) for _ in range(rnd.randrange(1, 30))] for _ in range(n)]


def test_sequential_requests_reuse_the_shared_prefix_and_answer_the_same(lm):
    ps = shared_prefix_prompts(5, 70, seed=1)
    off = make_engine(lm, prefix_caching=False)
    on = make_engine(lm)
    want = [run_ids(off, [p])[0] for p in ps]
    got = [run_ids(on, [p])[0] for p in ps]
    assert got == want
    assert on.scheduler.kv.stats.hits >= 4 * 64  # every later request found the 4 full blocks of the prefix
    assert off.scheduler.kv.stats.hits == 0


def test_a_multi_turn_conversation_reuses_the_previous_turn(lm):
    on, off = make_engine(lm), make_engine(lm, prefix_caching=False)
    convo: list[int] = [40 + i % 50 for i in range(40)]
    for turn in range(4):
        before = on.scheduler.kv.stats.hits
        a, b = run_ids(on, [convo])[0], run_ids(off, [convo])[0]
        assert a == b, turn
        reused = on.scheduler.kv.stats.hits - before
        assert reused == (0 if turn == 0 else (len(convo) - 1) // 16 * 16), (
            turn
        )  # all full blocks but the last
        convo = convo + a + [33 + turn] * 5


def test_concurrent_requests_chunked_prefill_and_preemption_with_the_cache(lm):
    ps = shared_prefix_prompts(8, 40, seed=2)
    want = run_ids(make_engine(lm, prefix_caching=False), ps)
    # warm the cache with one request, then run all under a small budget that preempts
    eng = make_engine(lm, kv_cache_tokens=96, max_model_len=96, max_num_batched_tokens=7)
    run_ids(eng, ps[:1])
    assert run_ids(eng, ps) == want
    assert eng.scheduler.num_preemptions > 0 and eng.scheduler.kv.stats.hits > 0
    assert eng.scheduler.kv.num_free_blocks == eng.scheduler.kv.num_blocks


def test_copies_of_one_prompt_arriving_together_reuse_the_first_prefill(lm):
    """n > 1 (the client fans the choices out as requests with the same prompt): once the first has
    computed the prompt, the others still waiting for the token budget take it from the cache."""
    prompt = shared_prefix_prompts(1, 100, seed=4)[0]
    want = run_ids(make_engine(lm, prefix_caching=False, max_num_batched_tokens=32), [prompt] * 4)
    eng = make_engine(lm, max_num_batched_tokens=32)
    assert run_ids(eng, [prompt] * 4) == want
    # the second is admitted in the step where the first completes its prompt (a miss); the last two find
    # the first's 6 full blocks
    assert eng.scheduler.kv.stats.hits >= 2 * 96


def test_block_copies_move_exactly_the_named_rows():
    import torch

    from maas.engine.llm.attention import KVCache
    from maas.engine.llm.kv_cache import CopyOp

    c = KVCache(2, 4, 64, 3, 8, torch.float32, torch.device("cpu"), pool_blocks=16, block_size=4)
    for t in c.k + c.v + c.pool_k + c.pool_v:
        t.normal_()
    k, pk = [t.clone() for t in c.k], [t.clone() for t in c.pool_k]
    saves = [CopyOp(True, 5, 1, 8), CopyOp(True, 6, 1, 12), CopyOp(True, 2, 0, 0)]  # a run of two, and one
    loads = [
        CopyOp(False, 9, 2, 4),
        CopyOp(False, 3, 2, 8),
        CopyOp(False, 5, 3, 0),
    ]  # reads a block just saved
    c.copy_blocks(loads + saves)  # saves go first whatever the order given
    for layer in range(2):
        pk[layer][5], pk[layer][6], pk[layer][2] = (
            k[layer][1, :, 8:12],
            k[layer][1, :, 12:16],
            k[layer][0, :, 0:4],
        )
        k[layer][2, :, 4:8], k[layer][2, :, 8:12], k[layer][3, :, 0:4] = (
            pk[layer][9],
            pk[layer][3],
            pk[layer][5],
        )
        assert torch.equal(c.pool_k[layer], pk[layer]) and torch.equal(c.k[layer], k[layer])


def test_a_slot_is_given_back_once_its_blocks_are_saved_and_live_blocks_copy_between_slots():
    import torch

    from maas.engine.llm.attention import KVCache
    from maas.engine.llm.kv_cache import CopyOp

    c = KVCache(2, 4, 64, 3, 8, torch.float32, torch.device("cpu"), pool_blocks=16, block_size=4)
    for t in c.k + c.v:
        t.normal_()
    k = [t.clone() for t in c.k]
    saves = [CopyOp(True, 5, 1, 0), CopyOp(True, 6, 1, 4)]  # slot 1 leaves
    loads = [CopyOp(False, -1, 3, 0, src_slot=2), CopyOp(False, -1, 3, 4, src_slot=2), CopyOp(False, 5, 1, 0)]
    released: list[tuple[int, bool]] = []  # each slot given back, and whether its rows were in the pool then
    c.release = (
        lambda slots: released.extend(  # type: ignore[method-assign]
            (s, torch.equal(c.pool_k[1][6], k[1][s, :, 4:8])) for s in slots
        )
    )
    c.copy_blocks(saves + loads, released=[1])
    assert released == [(1, True)]
    for layer in range(2):
        assert torch.equal(c.pool_k[layer][5], k[layer][1, :, 0:4])
        assert torch.equal(c.k[layer][3, :, 0:8], k[layer][2, :, 0:8])  # a live block, slot to slot
