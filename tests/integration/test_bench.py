"""`maas bench` against a real server, and a soak run above capacity (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil
import pytest

from tests.integration.conftest import MODEL, start_server, stop_server


def bench(url: str, *args: str, cwd) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "maas.cli.main", "bench", url, *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=900)


def test_bench_reports_json_and_png(server, tmp_path):
    r = bench(server.base_url, "--model", MODEL, "--concurrency", "4", "--num-prompts", "12",
              "--input-len", "32", "--output-len", "16", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "TTFT" in r.stdout and "p99" in r.stdout
    report = json.loads((tmp_path / "bench.json").read_text())
    s = report["summary"]
    assert s["completed"] == 12 and s["errors"] == {} and s["total_output_tokens"] == 12 * 16
    assert 0 < s["ttft_ms"]["p50"] <= s["ttft_ms"]["p99"] <= s["e2e_ms"]["p99"]
    assert s["itl_ms"]["p50"] > 0 and s["output_token_throughput"] > 0
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    r = bench("http://127.0.0.1:1/v1", cwd=tmp_path)
    assert r.returncode == 2 and "pass --model" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_soak_above_capacity_no_5xx_bounded_memory(tmp_path):
    """Three minutes at 3x the server's capacity: zero 5xx, every admitted request completes,
    RSS at the end within 10% of RSS after warm-up."""
    s = start_server(MODEL, "--max-num-seqs", "8", "--max-queued-requests", "8", "--max-model-len", "512")
    try:
        proc = psutil.Process(s.proc.pid)

        def rss() -> int:
            return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])

        warm = bench(
            s.base_url, "--concurrency", "16", "--num-prompts", "48", "--output-len", "32", cwd=tmp_path
        )
        assert warm.returncode == 0, warm.stderr
        time.sleep(1)
        after_warmup = rss()
        r = bench(s.base_url, "--concurrency", "48", "--duration", "180", "--input-len", "128",
                  "--output-len", "64", "--timeout", "120", cwd=tmp_path)  # fmt: skip
        assert r.returncode == 0, r.stderr
        time.sleep(1)
        at_end = rss()
        summary = json.loads((tmp_path / "bench.json").read_text())["summary"]
        print(
            r.stdout,
            f"\nRSS after warm-up {after_warmup / 2**20:.0f} MiB, at the end {at_end / 2**20:.0f} MiB",
        )
        errors = summary["errors"]
        assert set(errors) <= {"http_429"}, errors  # refusals, never failures
        assert summary["completed"] > 100
        assert summary["completed"] + errors.get("http_429", 0) == summary["requests"]
        assert at_end <= after_warmup * 1.10
    finally:
        stop_server(s)
