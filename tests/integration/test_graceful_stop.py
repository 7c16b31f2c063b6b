"""Stopping under a supervisor: a signal to the server's whole process group (systemd's
KillMode=control-group, `tini -g`, `kill -- -PGID`, Ctrl-C) still drains every running stream; a
second signal stops at once; a killed server leaves no engine process behind; `maas bench` gives up on
a server that is not there."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import torch

from tests.integration.conftest import MODEL, Server, free_port, start_server, stop_server

TOKENS = 300  # per stream: still decoding when the signal lands (4 streams share 2 cores)
DRAIN_S = 240  # generous: the machine may be slow; the drain ends as soon as the streams do


class Stream(threading.Thread):
    """One streamed completion of TOKENS tokens (ignore_eos), read chunk by chunk."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.texts = 0  # chunks that carried text
        self.finish: str | None = None
        self.usage: dict[str, int] | None = None
        self.error: str | None = None  # an error chunk, or the connection cut

    def run(self) -> None:
        body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": TOKENS, "temperature": 0,
                "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True}  # fmt: skip
        try:
            with httpx.stream("POST", self.url + "/v1/completions", json=body, timeout=600) as r:
                if r.status_code != 200:
                    self.error = f"http {r.status_code}: {r.read().decode(errors='replace')}"
                    return
                for line in r.iter_lines():
                    if not line.startswith("data:") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[5:])
                    if "error" in chunk:
                        self.error = chunk["error"]["message"]
                        return
                    for c in chunk.get("choices") or []:
                        self.texts += bool(c.get("text"))
                        self.finish = c.get("finish_reason") or self.finish
                    self.usage = chunk.get("usage") or self.usage
        except httpx.HTTPError as e:
            self.error = f"{type(e).__name__}: {e}"


def _start_streams(s: Server, n: int = 4) -> list[Stream]:
    """`n` streams, returned once every one of them is decoding."""
    streams = [Stream(s.url) for _ in range(n)]
    for st in streams:
        st.start()
    deadline = time.monotonic() + 300
    while not all(st.texts for st in streams):
        assert time.monotonic() < deadline, "the streams did not start"
        assert not any(st.error for st in streams), [st.error for st in streams]
        time.sleep(0.05)
    return streams


def _descendants(s: Server) -> list[psutil.Process]:
    children = psutil.Process(s.proc.pid).children(recursive=True)
    assert children, "the engine should run in a child process"
    return children


def _gone(procs: list[psutil.Process], timeout: float) -> bool:
    """True once none of `procs` runs any more (a zombie nobody reaped counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        if not alive:
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def group_server() -> Iterator[Server]:
    """A server leading its own process group (as under systemd or in a container), 4 sequences at once."""
    s = start_server(MODEL, "--max-model-len", "512", "--max-num-seqs", "4", "--drain-timeout", str(DRAIN_S),
                     new_session=True)  # fmt: skip
    children = psutil.Process(s.proc.pid).children(recursive=True)
    yield s
    stop_server(s)
    for c in children:  # a failed test leaves none of them running
        if not _gone([c], 0.1):
            with contextlib.suppress(psutil.Error):
                c.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_whole_group_drains_every_stream(group_server: Server, sig: signal.Signals) -> None:
    s = group_server
    engines = _descendants(s)
    streams = _start_streams(s)
    os.killpg(s.proc.pid, sig)  # the server, its engine process and any other child alike
    for st in streams:
        st.join(DRAIN_S)
    assert s.proc.wait(timeout=DRAIN_S) == 0
    log = Path(s.log).read_text(encoding="utf-8")
    assert f"signal {int(sig)}: draining 4 request(s)" in log, log  # the signal came while all 4 ran
    for st in streams:
        assert st.error is None, st.error
        assert st.finish == "length" and st.usage and st.usage["completion_tokens"] == TOKENS, vars(st)
    assert "loading it again" not in log and "engine stopped" not in log, log
    assert _gone(engines, 60)


def test_a_second_signal_stops_at_once_with_128_plus_the_signal(group_server: Server) -> None:
    s = group_server
    engines = _descendants(s)
    streams = _start_streams(s)
    os.killpg(s.proc.pid, signal.SIGTERM)
    time.sleep(0.5)
    os.killpg(s.proc.pid, signal.SIGTERM)  # again, during the drain
    assert s.proc.wait(timeout=120) == 128 + signal.SIGTERM
    for st in streams:
        st.join(60)
    cut = [st for st in streams if st.error is not None or st.finish != "length"]
    assert cut, [vars(st) for st in streams]  # the drain did not wait for them
    log = Path(s.log).read_text(encoding="utf-8")
    assert "again: stopping now" in log and "loading it again" not in log, log
    assert "Traceback" not in log, log  # the requests cut off are counted, not each given a traceback
    assert _gone(engines, 60)


def test_a_killed_server_leaves_no_engine_process_behind(group_server: Server) -> None:
    s = group_server
    engines = _descendants(s)
    streams = _start_streams(s, 2)  # the engine is busy when its server dies
    s.proc.kill()
    s.proc.wait(timeout=30)
    assert _gone(engines, 120), [p.pid for p in engines]
    for st in streams:
        st.join(60)
        assert st.error is not None


def test_bench_gives_up_on_a_server_that_is_not_there(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    cmd = [sys.executable, "-m", "maas.cli.main", "bench", url, "--model", MODEL, "--duration", "600",
           "--concurrency", "24", "--json", str(tmp_path / "b.json"), "--plot", ""]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"server unreachable at {url}" in r.stdout, r.stdout
    summary = json.loads((tmp_path / "b.json").read_text())["summary"]
    assert summary["unreachable"].startswith("server unreachable")
    assert summary["errors"] == {"connect": summary["requests"]} and summary["requests"] <= 24  # once each
    assert summary["duration_s"] < 600  # ended early, not at --duration
    # Without --model, the model list cannot be read either: the same words, and what to do.
    r = subprocess.run(cmd[:5] + cmd[7:], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "server unreachable" in r.stderr and "Traceback" not in r.stderr, r.stderr


TRAIN = """name: stop
seed: 1
model: {{arch: mlp, params: {{hidden: [64]}}}}
data: {{kind: digits}}
optim: {{name: sgd, lr: 0.05, momentum: 0.9}}
train: {{steps: 1000000, batch_size: 16, eval_every: 1000000, checkpoint_every: 1000000, log_every: 10}}
output: {{dir: {out}}}
"""


@pytest.mark.parametrize(
    ("nproc", "sig"), [(1, signal.SIGINT), (2, signal.SIGTERM)], ids=["alone", "torchrun"]
)
def test_maas_train_checkpoints_and_stops_on_a_signal_to_its_group(
    tmp_path: Path, nproc: int, sig: signal.Signals
) -> None:
    cfg = tmp_path / "stop.yaml"
    cfg.write_text(TRAIN.format(out=tmp_path / "run"))
    log = tmp_path / "train.log"
    with log.open("w") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "maas.cli.main", "train", str(cfg), "--nproc", str(nproc), "--no-register"],
            env={**os.environ, "MAAS_HOME": str(tmp_path / "home")}, stdout=f, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        metrics = tmp_path / "run" / "metrics.jsonl"
        deadline = time.monotonic() + 300
        while not (metrics.exists() and metrics.read_text().strip()):  # training, past its first steps
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        os.killpg(proc.pid, sig)  # Ctrl-C, or a supervisor stopping the group (the ranks: torchrun forwards)
        assert proc.wait(timeout=300) == 128 + sig, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = log.read_text()
    st = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    step = st["position"]["step"]
    assert 10 <= step < 1000000
    assert f"checkpoint written to {tmp_path / 'run' / 'last.pt'}" in out, out
    assert f"continue with: maas train {cfg} --resume" in out, out
    assert "Traceback" not in out, out
