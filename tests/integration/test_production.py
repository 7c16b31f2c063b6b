"""Production controls on a real server: API keys, metrics, request ids, 413, 429 with a bounded queue."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import httpx
import pytest
from openai import AuthenticationError, OpenAI

from tests.integration.conftest import MODEL, start_server, stop_server

USER, ADMIN = "sk-user-0123456789", "sk-admin-9876543210"


@pytest.fixture(scope="module")
def guarded():
    s = start_server(
        MODEL, "--api-key", USER, "--admin-api-key", ADMIN, "--max-num-seqs", "2", "--max-queued-requests", "1",
        "--max-model-len", "512", "--max-body-size", "64KiB", "--access-log-json",
    )  # fmt: skip
    yield s
    stop_server(s)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        named = line.startswith(name + "{") or line.startswith(name + " ")
        if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_api_keys(guarded):
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=guarded.base_url, api_key="wrong", max_retries=0).models.list()
    r = httpx.get(guarded.url + "/v1/models", timeout=10)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    client = OpenAI(base_url=guarded.base_url, api_key=USER, max_retries=0, timeout=120)
    assert MODEL in [m.id for m in client.models.list().data]
    assert httpx.get(guarded.url + "/health", timeout=10).status_code == 200  # open
    assert httpx.get(guarded.url + "/metrics", timeout=10).status_code == 200  # open unless --protect-metrics
    assert httpx.get(guarded.url + "/admin/models", headers=auth(USER), timeout=10).status_code == 403
    assert httpx.get(guarded.url + "/admin/models", headers=auth(ADMIN), timeout=10).status_code == 200
    assert httpx.get(guarded.url + "/v1/models", headers=auth(ADMIN), timeout=10).status_code == 200
    # The v2 API: model calls need a key (errors in v2's shape); health and server metadata stay open.
    r = httpx.get(guarded.url + "/v2/models/any-model", timeout=10)
    assert r.status_code == 401 and "API key" in r.json()["error"]
    assert httpx.get(guarded.url + "/v2/health/live", timeout=10).status_code == 200
    assert httpx.get(guarded.url + "/v2", timeout=10).json()["name"] == "maas"
    r = httpx.get(guarded.url + "/v2/models/any-model", headers=auth(USER), timeout=10)
    assert r.status_code == 404 and "any-model" in r.json()["error"]
    log = Path(guarded.log).read_text(encoding="utf-8")
    assert USER not in log and ADMIN not in log  # keys are never logged; key ids are
    assert '"key_id": "' in log


def test_metrics_move_with_requests_and_request_ids(guarded):
    before = httpx.get(guarded.url + "/metrics", timeout=10).text
    assert "maas:num_requests_running" in before and "maas:kv_cache_usage_perc" in before
    r = httpx.post(
        guarded.url + "/v1/chat/completions",
        headers={**auth(USER), "x-request-id": "trace-42"},
        json={"model": MODEL, "messages": [{"role": "user", "content": "Count to ten."}], "max_tokens": 8,
              "temperature": 0, "ignore_eos": True},
        timeout=120,
    )  # fmt: skip
    assert r.status_code == 200 and r.headers["x-request-id"] == "trace-42"
    generated = httpx.get(guarded.url + "/health", timeout=10).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    after = httpx.get(guarded.url + "/metrics", timeout=10).text
    m = {"model": MODEL}
    assert metric(after, "maas:request_success_total", finished_reason="length", **m) == (
        metric(before, "maas:request_success_total", finished_reason="length", **m) + 1
    )
    assert (
        metric(after, "maas:generation_tokens_total", **m)
        - metric(before, "maas:generation_tokens_total", **m)
        == 8
    )
    assert metric(after, "maas:prompt_tokens_total", **m) > metric(before, "maas:prompt_tokens_total", **m)
    for h in ("time_to_first_token_seconds", "e2e_request_latency_seconds", "request_queue_time_seconds"):
        assert metric(after, f"maas:{h}_count", **m) == metric(before, f"maas:{h}_count", **m) + 1, h
    assert metric(after, "maas:inter_token_latency_seconds_count", **m) >= (
        metric(before, "maas:inter_token_latency_seconds_count", **m) + 7
    )
    assert metric(after, "maas:http_requests_total", route="/v1/chat/completions", status="200") >= 1
    bad = httpx.post(
        guarded.url + "/v1/chat/completions", headers=auth(USER), json={"model": MODEL}, timeout=10
    )
    assert bad.status_code == 400
    final = httpx.get(guarded.url + "/metrics", timeout=10).text
    assert metric(final, "maas:requests_rejected_total") > metric(after, "maas:requests_rejected_total")


def test_oversized_body_is_413(guarded):
    big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 100_000}]}
    r = httpx.post(guarded.url + "/v1/chat/completions", headers=auth(USER), json=big, timeout=30)
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        yield b'{"model": "' + MODEL.encode() + b'", "messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"x" * 10_000
        yield b'"}]}'

    r = httpx.post(guarded.url + "/v1/chat/completions", headers={**auth(USER), "content-type": "application/json"},
                   content=chunks(), timeout=30)  # fmt: skip
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert httpx.get(guarded.url + "/health", timeout=10).status_code == 200


def test_full_queue_gets_429_while_admitted_requests_complete(guarded):
    body = {
        "model": MODEL,
        "prompt": "Once upon a time",
        "max_tokens": 60,
        "temperature": 0,
        "ignore_eos": True,
    }
    results: list[httpx.Response] = []

    def run() -> None:
        results.append(
            httpx.post(guarded.url + "/v1/completions", headers=auth(USER), json=body, timeout=300)
        )

    threads = [threading.Thread(target=run) for _ in range(3)]  # 2 running + 1 queued = the limit
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        running = metric(httpx.get(guarded.url + "/metrics", timeout=10).text, "maas:num_requests_running")
        if running >= 2:
            break
        time.sleep(0.05)
    extra = httpx.post(guarded.url + "/v1/completions", headers=auth(USER), json=body, timeout=30)
    for t in threads:
        t.join()
    assert extra.status_code == 429 and extra.headers["retry-after"] == "1"
    assert extra.json()["error"]["code"] == "queue_full"
    assert [r.status_code for r in results] == [200, 200, 200]
    assert all(r.json()["usage"]["completion_tokens"] == 60 for r in results)
    texts = {r.json()["choices"][0]["text"] for r in results}
    assert len(texts) == 1  # same greedy answer for each admitted request


def test_sigterm_drains_streams_refuses_new_requests_and_exits_0():
    s = start_server(MODEL, "--max-model-len", "512", "--max-num-seqs", "2", "--drain-timeout", "60")
    client = OpenAI(base_url=s.base_url, api_key="x", max_retries=0, timeout=120)
    try:
        # long enough to outlast the checks below (80 tokens took about half a second, and the server had
        # drained and exited before the 503 check)
        stream = client.completions.create(
            model=MODEL, prompt="Once upon a time", max_tokens=400, temperature=0, stream=True,
            extra_body={"ignore_eos": True},
        )  # fmt: skip
        chunks = [next(iter(stream))]
        s.proc.terminate()  # SIGTERM while the stream runs
        time.sleep(0.5)
        r = httpx.post(s.url + "/v1/completions", json={"model": MODEL, "prompt": "x"}, timeout=10)
        assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"
        assert httpx.get(s.url + "/health", timeout=10).status_code == 503
        chunks += list(stream)
        assert chunks[-1].choices[0].finish_reason == "length"
        assert sum(1 for c in chunks if c.choices and c.choices[0].text) >= 350  # the whole answer arrived
        assert s.proc.wait(timeout=60) == 0
    finally:
        stop_server(s)


def test_rate_limits_and_request_timeout():
    s = start_server(MODEL, "--max-model-len", "2048", "--max-num-seqs", "2", "--api-key", "k1", "--api-key", "k2",
                     "--rate-limit-rpm", "3", "--request-timeout", "6")  # fmt: skip
    try:
        body = {"model": MODEL, "prompt": "hi", "max_tokens": 2}
        codes = [httpx.post(s.url + "/v1/completions", headers=auth("k1"), json=body, timeout=60).status_code
                 for _ in range(4)]  # fmt: skip
        assert codes == [200, 200, 200, 429]
        r = httpx.post(s.url + "/v1/completions", headers=auth("k1"), json=body, timeout=60)
        assert r.json()["error"]["code"] == "rate_limit_requests" and r.headers["retry-after"]
        assert (
            httpx.post(s.url + "/v1/completions", headers=auth("k2"), json=body, timeout=60).status_code
            == 200
        )
        long = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 1800, "ignore_eos": True}
        t = time.monotonic()
        r = httpx.post(s.url + "/v1/completions", headers=auth("k2"), json=long, timeout=60)
        assert r.status_code == 504 and r.json()["error"]["type"] == "timeout"
        assert 6 <= time.monotonic() - t < 15
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the aborted request leaves the engine
            if httpx.get(s.url + "/health", timeout=10).json()["models"][MODEL]["running"] == 0:
                break
            time.sleep(0.2)
        assert httpx.get(s.url + "/health", timeout=10).json()["models"][MODEL]["running"] == 0
    finally:
        stop_server(s)
