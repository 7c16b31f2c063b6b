"""A real `maas serve` process with the default model, shared by the integration tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: str = ""  # the server's stdout + stderr file

    @property
    def base_url(self) -> str:
        return self.url + "/v1"


def start_server(
    *args: str, timeout: float = 180.0, env: dict[str, str] | None = None, new_session: bool = False
) -> Server:
    """`maas serve ARGS` on a free port, once healthy; with `new_session` it leads its own process group
    (as under a supervisor), so that `os.killpg(server.proc.pid, sig)` reaches it and its children."""
    port = free_port()
    cmd = [sys.executable, "-m", "maas.cli.main", "serve", "--port", str(port), *args]
    # The log goes to a file: a pipe nobody reads would block a chatty server once full.
    log = tempfile.NamedTemporaryFile(prefix=f"maas-serve-{port}-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env or {**os.environ}, start_new_session=new_session
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = open(log.name, encoding="utf-8", errors="replace").read()  # noqa: SIM115
            raise RuntimeError(f"server exited with {proc.returncode}:\n{out}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return Server(url, proc, log.name)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not become healthy in time")


def stop_server(s: Server) -> None:
    s.proc.terminate()
    try:
        s.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        s.proc.kill()


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """The default model behind a real HTTP server process."""
    s = start_server("--max-model-len", "1024", "--max-num-seqs", "32")
    yield s
    stop_server(s)


@pytest.fixture(scope="session")
def client(server: Server):
    """The official OpenAI client pointed at our server."""
    from openai import OpenAI

    return OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)


MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def spark():
    """One local Spark session (2 cores, UI off) for the whole test session."""
    pytest.importorskip("pyspark", reason="PySpark is not installed (pip install 'maas[spark]')")
    from maas.data.spark import session

    s = session("local[2]")
    s.conf.set("spark.sql.shuffle.partitions", "4")
    yield s
    s.stop()
