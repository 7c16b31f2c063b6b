"""Several LLMs behind one server with --max-loaded-models 1: LRU eviction, never mid-request, bounded memory."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
from openai import OpenAI

from maas.store.builtin import builtin_path
from tests.gguf_util import tiny_model, write_gguf
from tests.integration.conftest import MODEL, start_server, stop_server

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def engine_processes(pid: int) -> list[psutil.Process]:
    """The server's engine processes (multiprocessing children; not their own helpers)."""
    out = []
    for c in psutil.Process(pid).children(recursive=False):
        try:
            cmd = " ".join(c.cmdline())
        except psutil.Error:
            continue
        if "resource_tracker" not in cmd and ("spawn_main" in cmd or "multiprocessing" in cmd):
            out.append(c)
    return out


def engines_rss(pid: int) -> int:
    """Resident memory of the server's engine processes together."""
    total = 0
    for c in engine_processes(pid):
        with contextlib.suppress(psutil.Error):
            total += c.memory_info().rss
    return total


@pytest.fixture(scope="module")
def models3(tmp_path_factory):
    d = tmp_path_factory.mktemp("pool")
    tiny = write_gguf(d / "tiny.gguf", tiny_model(seed=3))
    copy = shutil.copy(builtin_path(MODEL), d / "smollm2-copy.gguf")  # a second model as big as the first
    s = start_server(
        MODEL,
        str(tiny),
        str(copy),
        "--max-loaded-models",
        "1",
        "--max-model-len",
        "256",
        "--max-num-seqs",
        "4",
    )
    yield s
    stop_server(s)


def admin(server) -> dict[str, dict]:
    r = httpx.get(server.url + "/admin/models", timeout=30)
    assert r.status_code == 200
    return {m["id"]: m for m in r.json()["data"]}


def test_alternating_requests_both_answered_memory_bounded(models3):
    server = models3
    client = OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=300)
    state = admin(server)
    assert state[MODEL]["loaded"] and not state["tiny"]["loaded"]  # only the first fits at start-up

    def ask(model: str, stream: bool = False) -> str:
        kw = {"model": model, "messages": QUESTION, "temperature": 0, "max_tokens": 12}
        if stream:
            return "".join(
                c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **kw)
            )
        return client.chat.completions.create(**kw).choices[0].message.content

    paris = ask(MODEL)
    assert "Paris" in paris
    engine_a = admin(server)[MODEL]["memory_bytes"]  # after serving: cache and buffers in use
    server_rss = psutil.Process(server.proc.pid).memory_info().rss
    tiny_answer = ask("tiny")  # evicts smollm2, loads tiny
    state = admin(server)
    assert state["tiny"]["loaded"] and not state[MODEL]["loaded"]

    samples: list[tuple[int, int, int]] = []  # (engines alive, server RSS, engines' RSS)
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            pid = server.proc.pid
            samples.append(
                (len(engine_processes(pid)), psutil.Process(pid).memory_info().rss, engines_rss(pid))
            )
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        jobs = [(m, s) for _ in range(2) for m in (MODEL, "tiny", "smollm2-copy") for s in (False, True)]
        with ThreadPoolExecutor(4) as ex:
            answers = list(ex.map(lambda j: (j[0], ask(*j)), jobs))
    finally:
        stop.set()
        watcher.join()
    for model, text in answers:  # every request answered, by the model it named
        assert text == (tiny_answer if model == "tiny" else paris), model
    assert max(n for n, _, _ in samples) <= 1, "two engines were alive at once"
    server_peak = max(s for _, s, _ in samples)
    engine_peak = max(e for _, _, e in samples)
    mib = 2**20
    print(
        f"RSS: server {server_rss / mib:.0f} MiB (peak {server_peak / mib:.0f}), one SmolLM2 engine "
        f"{engine_a / mib:.0f} MiB (engines' peak {engine_peak / mib:.0f})"
    )
    # two SmolLM2 engines at once would be 2x a settled one; one engine's load has a transient peak (it
    # holds the float weights while packing them), which the process count above tells apart
    engine_a = max(engine_a, engines_rss(server.proc.pid))
    assert engine_peak < 2 * engine_a
    assert server_peak < server_rss + 256 * mib  # the HTTP process does not grow with the switching
    assert admin(server)[MODEL]["loads"] >= 2  # it really was evicted and reloaded


def test_eviction_waits_for_a_running_stream(models3):
    server = models3
    client = OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=300)
    httpx.post(server.url + f"/admin/models/{MODEL}/load", timeout=300).raise_for_status()
    stream = client.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=200, stream=True,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    first = next(iter(stream))  # the stream is running on smollm2
    with ThreadPoolExecutor(1) as ex:
        other = ex.submit(
            lambda: client.completions.create(model="tiny", prompt="hello", max_tokens=5, temperature=0)
        )
        state, deadline = admin(server)[MODEL]["state"], time.monotonic() + 10
        while state != "draining" and time.monotonic() < deadline:  # until the other request asks for room
            time.sleep(0.05)
            state = admin(server)[MODEL]["state"]
        assert not other.done()  # waits: smollm2 is draining, not killed
        assert state == "draining"
        rest = list(stream)
        tiny = other.result(timeout=300)
    chunks = [first, *rest]
    assert chunks[-1].choices[0].finish_reason == "length"
    assert len(tiny.choices[0].text) > 0


def test_admin_load_unload_and_errors(models3):
    server = models3
    r = httpx.post(server.url + "/admin/models/tiny/load", timeout=300)
    assert r.status_code == 200 and r.json()["memory_bytes"] > 0
    state = admin(server)
    assert state["tiny"]["loaded"] and not state[MODEL]["loaded"]
    r = httpx.post(server.url + "/admin/models/tiny/unload", timeout=60)
    assert r.status_code == 200 and r.json()["was_loaded"]
    assert not any(m["loaded"] for m in admin(server).values())
    assert engine_processes(server.proc.pid) == []
    r = httpx.post(server.url + "/admin/models/nope/load", timeout=30)
    assert r.status_code == 404 and "nope" in r.json()["error"]["message"]
    r = httpx.post(
        server.url + "/v1/completions", json={"model": "../../etc/passwd", "prompt": "x"}, timeout=30
    )
    assert r.status_code == 404  # request fields never name files
    listed = {m["id"]: m["loaded"] for m in httpx.get(server.url + "/v1/models", timeout=30).json()["data"]}
    assert listed[MODEL] is False and listed["tiny"] is False and listed["smollm2-copy"] is False
    r = httpx.post(
        server.url + "/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 2}, timeout=300
    )
    assert r.status_code == 200  # loads again on demand
