"""The first start of a fresh install: the kernels built at install are loaded, whoever starts the server and
whatever is on its PATH; nothing is compiled at start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from maas.kernels.native import BUILDS, compiler
from tests.integration.conftest import free_port, start_server, stop_server

MAAS = [sys.executable, "-m", "maas.cli.main"]


def bare_env(tmp_path: Path) -> dict[str, str]:
    """A user the install has never seen (a new HOME, no MAAS_HOME) with no compiler and no ninja on PATH."""
    (tmp_path / "home").mkdir()
    (tmp_path / "bin").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MAAS_HOME", "MAAS_AUTO_IMPORT_BUILTINS")}
    return env | {"HOME": str(tmp_path / "home"), "PATH": str(tmp_path / "bin")}


@pytest.fixture(scope="module")
def installed() -> None:
    if compiler() is not None or not BUILDS["maas_block_linear_avx2"].runs_here():
        pytest.skip("this machine builds no native kernels")


def test_a_new_user_without_a_compiler_serves_on_the_installed_kernels(
    tmp_path: Path, installed: None
) -> None:
    env = bare_env(tmp_path)
    t0 = time.monotonic()
    s = start_server(env=env, timeout=120)
    print(f"healthy {time.monotonic() - t0:.1f} s after the start (new HOME, no compiler on PATH)")
    try:
        r = httpx.post(
            s.url + "/v1/chat/completions",
            json={"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Hi"}],
                  "max_tokens": 4},
            timeout=60,
        )  # fmt: skip
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] > 0
        log = Path(s.log).read_text(encoding="utf-8", errors="replace")
        assert "kept in the file's block formats" in log, log  # the GGUF's blocks run on the native kernel
        assert "native kernel" not in log and "torch reference" not in log, log
    finally:
        stop_server(s)
    assert (tmp_path / "home" / ".maas").is_dir(), "the new user's MAAS_HOME was not used"
    assert not (tmp_path / "home" / ".cache" / "torch_extensions").exists(), "something was compiled"


def test_info_reports_the_install(tmp_path: Path, installed: None) -> None:
    env = bare_env(tmp_path) | {"MAAS_PORT": str(free_port())}
    r = subprocess.run([*MAAS, "info", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["maas"] and info["torch"]["version"].startswith("2.")
    assert info["cpu"]["cores"] >= 1 and "avx2" in info["cpu"]["features"]
    builds = {b["name"]: b for b in info["kernels"]["builds"]}
    assert set(builds) == set(BUILDS)
    assert all(b["built"] for b in builds.values() if b["runs_here"])
    in_use = [n for n, b in builds.items() if b["in_use"]]
    assert "maas_q8_linear" in in_use and any(n.startswith("maas_block_linear") for n in in_use)
    assert info["registry"]["home"] == str(tmp_path / "home" / ".maas")
    assert info["server"]["answers"] is False
    assert "onnxruntime" in info["extras"] and info["extras"]["onnxruntime"]

    text = subprocess.run([*MAAS, "info"], capture_output=True, text=True, env=env, timeout=120)
    assert text.returncode == 0 and "kernels" in text.stdout and "maas_q8_linear" in text.stdout


def test_info_sees_the_models_and_a_running_server(server, installed: None) -> None:
    port = server.url.rsplit(":", 1)[1]
    r = subprocess.run([*MAAS, "info", "--json"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "MAAS_PORT": port})  # fmt: skip
    info = json.loads(r.stdout)
    assert info["server"] == {"url": server.url, "answers": True, "status": 200}
    assert info["registry"]["answers"] is True
