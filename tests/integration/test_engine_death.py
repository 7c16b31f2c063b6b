"""If an engine process dies, its requests fail with a 503 (never a hang), and the supervisor loads the
model again: the next request is served, /metrics and /admin/models count the restart."""

import json
import subprocess
import sys
import threading
import time

import httpx
import psutil

from tests.integration.conftest import MODEL, start_server, stop_server


def _kill_children(server) -> None:
    children = psutil.Process(server.proc.pid).children(recursive=True)
    engines = [c for c in children if "python" in c.name().lower()]
    assert engines, "the engine should run in a child process"
    for c in engines:
        c.kill()


def _restarts(server, model: str) -> tuple[int, float]:
    admin = httpx.get(server.url + "/admin/models", timeout=10).json()
    row = next(m for m in admin["data"] if m["id"] == model)
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    line = next(
        x for x in metrics.splitlines() if x.startswith(f'maas:engine_restarts_total{{model="{model}"}}')
    )
    return row["restarts"], float(line.split()[-1])


def test_engine_process_death_fails_its_requests_and_the_next_one_is_served():
    server = start_server("--max-model-len", "2048", "--max-num-seqs", "2")
    try:
        # long enough to still be decoding when the engine is killed (200 tokens took under a second)
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Count to a thousand."}],
                "max_tokens": 1900, "ignore_eos": True}  # fmt: skip
        got: dict[str, httpx.Response] = {}
        t = threading.Thread(
            target=lambda: got.setdefault(
                "r", httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
            )
        )
        t.start()
        time.sleep(1.0)  # the request is decoding
        _kill_children(server)
        t.join(60)
        r = got["r"]
        assert r.status_code == 503 and r.json()["error"]["type"] == "service_unavailable", r.text
        again = httpx.post(server.url + "/v1/chat/completions", timeout=120,
                           json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})  # fmt: skip
        assert again.status_code == 200, again.text
        assert httpx.get(server.url + "/health", timeout=5).status_code == 200
        assert _restarts(server, MODEL) == (1, 1.0)
    finally:
        stop_server(server)


def test_embedding_process_death_gives_503_not_a_hang_and_it_comes_back():
    server = start_server("all-minilm-l6-v2", "--embed-process")
    try:
        url = server.url + "/v1/embeddings"
        body = {"model": "all-minilm-l6-v2", "input": "The cat sat."}
        assert httpx.post(url, json=body, timeout=30).status_code == 200
        _kill_children(server)
        statuses = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            r = httpx.post(url, json=body, timeout=30)
            statuses.append(r.status_code)
            if r.status_code == 200:
                break
            assert r.status_code == 503 and r.json()["error"]["type"] == "service_unavailable", r.text
            time.sleep(0.5)
        assert statuses[-1] == 200, statuses
        assert _restarts(server, "all-minilm-l6-v2") == (1, 1.0)
    finally:
        stop_server(server)


def test_maas_bench_running_through_an_engine_death_counts_the_errors_and_the_recovery(tmp_path):
    server = start_server("--max-model-len", "256", "--max-num-seqs", "4")
    try:
        report = tmp_path / "bench.json"
        cmd = [sys.executable, "-m", "maas.cli.main", "bench", server.base_url, "--duration", "24",
               "--concurrency", "4", "--output-len", "24", "--json", str(report), "--plot", ""]  # fmt: skip
        bench = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(8)  # under load
        _kill_children(server)
        out, _ = bench.communicate(timeout=120)  # no hang: the run ends on time
        assert bench.returncode == 0, out
        data = json.loads(report.read_text())
        errors = data["summary"]["errors"]
        assert errors and set(errors) <= {"http_503", "stream_error"}, errors
        assert all(kind in out for kind in errors), out  # the printed report names them too
        failed = [r["start"] for r in data["requests"] if r["error"]]
        served_after = [r for r in data["requests"] if not r["error"] and r["start"] > max(failed)]
        assert served_after, "the model should serve again after the restart, within the run"
        assert _restarts(server, MODEL) == (1, 1.0)
    finally:
        stop_server(server)
