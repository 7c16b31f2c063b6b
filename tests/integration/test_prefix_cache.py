"""Prefix caching on the real server: a repeated long system prompt is reused, the answer does not change."""

from __future__ import annotations

import httpx

from tests.integration.conftest import MODEL


def counter(server, name: str) -> float:
    for line in httpx.get(server.url + "/metrics", timeout=30).text.splitlines():
        if line.startswith(f'{name}{{model="{MODEL}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_repeated_system_prompt_is_served_from_the_cache_with_the_same_answer(client, server):
    system = "You answer questions about cities. " + " ".join(f"City number {i} is nice." for i in range(60))
    msgs = [
        {"role": "system", "content": system},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    hits0 = counter(server, "maas:prefix_cache_hits_total")
    queries0 = counter(server, "maas:prefix_cache_queries_total")
    first = client.chat.completions.create(model=MODEL, messages=msgs, temperature=0, max_tokens=20)
    second = client.chat.completions.create(model=MODEL, messages=msgs, temperature=0, max_tokens=20)
    assert second.choices[0].message.content == first.choices[0].message.content
    reused = counter(server, "maas:prefix_cache_hits_total") - hits0
    prompt = first.usage.prompt_tokens
    assert counter(server, "maas:prefix_cache_queries_total") - queries0 == 2 * prompt
    assert reused >= (prompt - 1) // 16 * 16  # the second request found every full block of the first
