"""A corrupt blob on disk: loading fails with a message naming the model and the blob, and
`maas models verify` reports it (real `maas` processes, a real server)."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from maas.store.registry import Registry
from tests.gguf_util import tiny_model, write_gguf
from tests.integration.conftest import MODEL, start_server, stop_server


def maas(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maas.cli.main", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_corrupt_blob_is_refused_at_load_and_reported_by_verify(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "MAAS_HOME": str(home)}
    gguf = write_gguf(tmp_path / "tiny.gguf", tiny_model(seed=5))
    assert maas("models", "import", str(gguf), "--name", "tiny:v1", env=env).returncode == 0
    digest = Registry(home=home).show("tiny:v1").files[0]["digest"]
    blob = home / "blobs" / digest
    server = start_server(MODEL, "--max-model-len", "256", "--max-num-seqs", "2", env=env)
    try:
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the weights
        blob.write_bytes(bytes(data))

        r = httpx.post(server.url + "/v1/completions", json={"model": "tiny:v1", "prompt": "a"}, timeout=120)
        assert r.status_code == 500
        msg = r.json()["error"]["message"]
        assert "tiny:v1" in msg and digest in msg and "does not match its digest" in msg
        assert httpx.get(server.url + "/health", timeout=10).status_code == 200  # the server carries on
        ok = httpx.post(
            server.url + "/v1/completions", json={"model": MODEL, "prompt": "a", "max_tokens": 2}, timeout=120
        )
        assert ok.status_code == 200
    finally:
        stop_server(server)

    r = maas("serve", "tiny:v1", "--port", "1", env=env)
    assert r.returncode == 2 and "does not match its digest" in r.stderr and "Traceback" not in r.stderr
    r = maas("models", "verify", env=env)
    assert r.returncode == 1 and "CORRUPT" in r.stdout and "tiny:v1" in r.stdout
