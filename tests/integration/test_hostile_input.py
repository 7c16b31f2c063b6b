"""A few hundred malformed and hostile requests: every one gets a JSON 4xx (or, for merely unknown
fields, a normal answer), never a 5xx, and the server stays healthy and correct."""

from __future__ import annotations

import itertools
import json
import random

import httpx

from tests.integration.conftest import MODEL

EMB = "all-minilm-l6-v2"
BAD_VALUES = [
    None,
    "x",
    "",
    -1,
    0,
    10**30,
    -(10**30),
    1e308,
    -1e308,
    3.5,
    True,
    [],
    [1, "a"],
    {},
    {"a": 1},
    "∞",
]
CHAT_FIELDS = ["model", "messages", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "stream",
               "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty", "top_k", "min_p",
               "repetition_penalty", "stop_token_ids", "stream_options", "response_format", "tools"]  # fmt: skip
MSG = [{"role": "user", "content": "hi"}]


def hostile_bodies() -> list[tuple[str, bytes, dict[str, str]]]:
    rnd = random.Random(7)
    out: list[tuple[str, bytes, dict[str, str]]] = []
    js = {"content-type": "application/json"}

    def add(path: str, body: object) -> None:
        out.append((path, json.dumps(body).encode(), js))

    for field, value in itertools.product(CHAT_FIELDS, BAD_VALUES):
        body = {"model": MODEL, "messages": MSG, "max_tokens": 2, field: value}
        add("/v1/chat/completions", body)
    for field, value in itertools.product(
        ["prompt", "max_tokens", "echo", "logprobs", "n", "best_of"], BAD_VALUES
    ):
        add("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 2, field: value})
    for field, value in itertools.product(["input", "dimensions", "encoding_format", "truncate"], BAD_VALUES):
        add("/v1/embeddings", {"model": EMB, "input": "hi", field: value})
    for name in [
        "../../etc/passwd",
        "/etc/passwd",
        "..",
        "a/../../b",
        "C:\\\\x",
        "x" * 5000,
        "\x00",
        "smollm2:../x",
    ]:
        add("/v1/chat/completions", {"model": name, "messages": MSG})
        add("/v1/embeddings", {"model": name, "input": "x"})
    for role in ["root", "", None, 5]:
        add("/v1/chat/completions", {"model": MODEL, "messages": [{"role": role, "content": "x"}]})
    add(
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
    )
    add("/v1/chat/completions", {"model": MODEL, "messages": [], "max_tokens": 2})
    add("/v1/completions", {"model": MODEL, "prompt": [[1, 2], [3]], "max_tokens": 2})
    add("/v1/completions", {"model": MODEL, "prompt": [-5, 10**12], "max_tokens": 2})
    add("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 10**9})
    deep = "[" * 100_000 + "]" * 100_000
    out.append(("/v1/chat/completions", deep.encode(), js))
    out.append(("/v1/chat/completions", b'{"model": "' + bytes([0xFF, 0xFE, 0xC3]) + b'"}', js))
    out.append(("/v1/chat/completions", b"\xff\xfe\x00garbage", js))
    out.append(("/v1/chat/completions", b"", js))
    out.append(("/v1/chat/completions", b"[1, 2, 3]", js))
    out.append(("/v1/chat/completions", b'"just a string"', js))
    out.append(("/v1/chat/completions", b"model=x", {"content-type": "application/x-www-form-urlencoded"}))
    out.append(("/v1/embeddings", b'{"model": "' + EMB.encode() + b'", "input": "x"' + b" " * 10, js))
    for _ in range(40):  # random byte soup
        out.append(("/v1/" + rnd.choice(["chat/completions", "completions", "embeddings"]),
                    bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 300))), js))  # fmt: skip
    return out


def test_hostile_requests_get_json_4xx_and_the_server_stays_healthy(server):
    bodies = hostile_bodies()
    assert len(bodies) >= 300
    statuses: dict[int, int] = {}
    with httpx.Client(timeout=120) as c:
        for path, body, headers in bodies:
            r = c.post(server.url + path, content=body, headers=headers)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            assert r.status_code < 500, (path, body[:200], r.status_code, r.text[:300])
            if r.status_code >= 400:
                err = r.json()["error"]  # always OpenAI's error shape
                assert err["message"] and err["type"], err
        assert c.get(server.url + "/health").status_code == 200
        ok = c.post(server.url + "/v1/chat/completions",
                    json={"model": MODEL, "messages": [{"role": "user", "content": "What is the capital of France?"}],
                          "temperature": 0, "max_tokens": 12})  # fmt: skip
        assert "Paris" in ok.json()["choices"][0]["message"]["content"]
    print("statuses:", dict(sorted(statuses.items())))
    assert sum(v for k, v in statuses.items() if 400 <= k < 500) > 250
