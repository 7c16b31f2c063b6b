"""The asyncio front on a tiny model: n choices, streaming, and cancellation freeing the cache."""

import asyncio
import time

from maas.engine.llm.sampling_params import SamplingParams
from maas.engine.llm.thread_engine import ThreadEngine
from tests.conftest import make_engine, reference_greedy


def test_n_choices_stream_and_greedy_choices_agree(lm):
    eng = ThreadEngine(make_engine(lm))
    prompt = [65, 66, 67, 68]

    async def main():
        texts = {0: [], 1: []}
        async for idx, out in eng.generate(
            "r", prompt, SamplingParams(n=2, temperature=0, max_tokens=6, ignore_eos=True)
        ):
            texts[idx] += out.token_ids
        return texts

    try:
        texts = asyncio.run(main())
    finally:
        eng.shutdown()
    assert texts[0] == texts[1] == reference_greedy(lm, prompt, 6)


def test_cancelling_a_stream_aborts_the_request(lm):
    eng = ThreadEngine(make_engine(lm))

    async def main():
        params = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)
        stream = eng.generate("r", [70] * 10, params)
        for _ in range(3):
            await anext(stream)
        await stream.aclose()  # what the server does when a client disconnects

    try:
        asyncio.run(main())
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and eng.engine.has_unfinished():
            time.sleep(0.01)
        assert not eng.engine.has_unfinished()
        assert eng.engine.scheduler.kv.num_free_blocks == eng.engine.scheduler.kv.num_blocks
    finally:
        eng.shutdown()


def test_a_failed_step_fails_its_requests_and_the_loop_goes_on(lm):
    """engine/llm/loop.py (the same loop a serving child process runs): a step that raises aborts what was in
    flight with a 503-class error, frees its cache, and the next request is served."""
    import pytest

    from maas.errors import EngineDeadError

    engine = make_engine(lm)
    real, calls = engine.step, []

    def flaky():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real()

    engine.step = flaky
    eng = ThreadEngine(engine)
    params = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)

    async def main():
        with pytest.raises(EngineDeadError, match="boom"):
            async for _ in eng.generate("a", [65, 66, 67], params):
                pass
        got = []
        async for _, out in eng.generate("b", [65, 66, 67], params):
            got += out.token_ids
        return got

    try:
        got = asyncio.run(main())
        assert got == reference_greedy(lm, [65, 66, 67], 5) and eng.alive
        assert engine.scheduler.kv.num_free_blocks == engine.scheduler.kv.num_blocks
    finally:
        eng.shutdown()
    assert not eng.alive
