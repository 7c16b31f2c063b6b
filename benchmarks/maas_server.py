"""A `maas serve` process on a free loopback port for a benchmark, stopped when done."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def maas_server(*args: str) -> Iterator[str]:
    """Start `maas serve ARGS`, wait until /health answers 200, yield its base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "maas.cli.main", "serve", "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            if proc.poll() is not None:
                raise SystemExit(f"maas serve exited with {proc.returncode}: {' '.join(cmd)}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
