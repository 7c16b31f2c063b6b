"""The asyncio front on a tiny model: n choices, streaming, and cancellation freeing the cache."""

import asyncio
import time

from maas.engine.async_engine import AsyncEngine
from maas.engine.sampling_params import SamplingParams
from tests.conftest import make_engine, reference_greedy


def test_n_choices_stream_and_greedy_choices_agree(lm):
    eng = AsyncEngine(make_engine(lm))
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
    eng = AsyncEngine(make_engine(lm))

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
        assert eng.engine.blocks.num_free_blocks == eng.engine.blocks.num_blocks
    finally:
        eng.shutdown()
