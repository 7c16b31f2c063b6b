"""Many users at once: continuous batching must not change anyone's answer."""

import asyncio
import time

import httpx
from openai import AsyncOpenAI

from tests.integration.conftest import MODEL

QUESTIONS = [
    "What is the capital of France?",
    "Name a color of the sky.",
    "Write a short poem about cats.",
    "What is 3 times 4?",
    "Give me a tip for learning Python.",
    "Describe the sea in one sentence.",
    "Why do leaves change color?",
    "Say hello in Spanish.",
]


async def ask(client, q, stream):
    kw = dict(model=MODEL, messages=[{"role": "user", "content": q}], temperature=0, max_tokens=40)
    if not stream:
        r = await client.chat.completions.create(**kw)
        return r.choices[0].message.content
    parts = []
    async for chunk in await client.chat.completions.create(**kw, stream=True):
        for c in chunk.choices:
            parts.append(c.delta.content or "")
    return "".join(parts)


def test_32_concurrent_streams_match_solo_answers(server):
    async def main():
        client = AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=300)
        solo = [await ask(client, q, stream=False) for q in QUESTIONS]
        qs = [QUESTIONS[i % len(QUESTIONS)] for i in range(32)]
        together = await asyncio.gather(*(ask(client, q, stream=True) for q in qs))
        await client.close()
        return solo, together

    solo, together = asyncio.run(main())
    assert all(solo)
    for i, text in enumerate(together):
        assert text == solo[i % len(QUESTIONS)], i


def test_client_disconnect_aborts_the_request(server):
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell me a very long story."}],
        "max_tokens": 900,
        "ignore_eos": True,
        "stream": True,
    }
    with httpx.Client(timeout=60) as c, c.stream("POST", server.url + "/v1/chat/completions", json=body) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]
        assert any(line.startswith("data: ") for line in got)
        assert httpx.get(server.url + "/health").json()["models"][MODEL]["running"] == 1
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stats = httpx.get(server.url + "/health").json()["models"][MODEL]
        if stats["running"] == 0 and stats["kv_cache_usage"] == 0.0:
            break
        time.sleep(0.1)
    assert stats["running"] == 0 and stats["kv_cache_usage"] == 0.0
    # the Prometheus view agrees, and the aborted request's tokens stop counting
    scrape = lambda: httpx.get(server.url + "/metrics").text  # noqa: E731
    text = scrape()
    assert f'maas:num_requests_running{{model="{MODEL}"}} 0.0' in text
    assert f'maas:request_success_total{{finished_reason="abort",model="{MODEL}"}}' in text
    generated = [
        line
        for line in text.splitlines()
        if line.startswith(f'maas:generation_tokens_total{{model="{MODEL}"}}')
    ]
    time.sleep(1.0)
    again = [
        line
        for line in scrape().splitlines()
        if line.startswith(f'maas:generation_tokens_total{{model="{MODEL}"}}')
    ]
    assert generated == again
