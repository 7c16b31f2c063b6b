"""If the engine process dies, the server says so (503) instead of hanging or crashing."""

import time

import httpx
import psutil

from tests.integration.conftest import MODEL, start_server, stop_server


def test_engine_process_death_gives_503_not_a_hang():
    server = start_server("--max-model-len", "256", "--max-num-seqs", "2")
    try:
        children = psutil.Process(server.proc.pid).children(recursive=True)
        engines = [c for c in children if "python" in c.name().lower()]
        assert engines, "the engine should run in a child process"
        for c in engines:
            c.kill()
        deadline = time.monotonic() + 15
        status = None
        while time.monotonic() < deadline:
            status = httpx.get(server.url + "/health", timeout=5).status_code
            if status == 503:
                break
            time.sleep(0.2)
        assert status == 503
        r = httpx.post(
            server.url + "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert r.status_code == 503 and r.json()["error"]["type"] == "service_unavailable"
    finally:
        stop_server(server)


def test_embedding_process_death_gives_503_not_a_hang():
    server = start_server("all-minilm-l6-v2", "--embed-process")
    try:
        url = server.url + "/v1/embeddings"
        body = {"model": "all-minilm-l6-v2", "input": "The cat sat."}
        assert httpx.post(url, json=body, timeout=30).status_code == 200
        children = psutil.Process(server.proc.pid).children(recursive=True)
        workers = [c for c in children if "python" in c.name().lower()]
        assert workers, "the encoder should run in a child process"
        for c in workers:
            c.kill()
        r = httpx.post(url, json=body, timeout=30)
        assert r.status_code == 503 and r.json()["error"]["type"] == "service_unavailable"
        assert httpx.get(server.url + "/health", timeout=5).status_code == 503
    finally:
        stop_server(server)
