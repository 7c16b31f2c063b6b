"""Training through the `maas train` command: real processes, real data, real torch.distributed (gloo),
the result registered and served by a real server to the official openai client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from openai import OpenAI

from maas.models.exported import load_exported
from tests.integration.conftest import start_server, stop_server

ROOT = Path(__file__).resolve().parents[2]


def maas(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maas.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    h = str(tmp_path / "home")
    monkeypatch.setenv("MAAS_HOME", h)
    return {**os.environ, "MAAS_HOME": h}


def _show(name: str, env: dict[str, str]) -> dict:
    r = maas("models", "show", name, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _params(d: Path) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in load_exported(d).parameters()])


MLP = """name: {name}
seed: 1
model: {{arch: mlp, params: {{hidden: [64]}}}}
data: {{kind: digits}}
optim: {{name: sgd, lr: 0.05, momentum: 0.9}}
schedule: {{kind: cosine, warmup_steps: 10}}
train: {{steps: {steps}, batch_size: {batch}, eval_every: 50, checkpoint_every: {ckpt}, log_every: 10}}
output: {{dir: {out}}}
"""


def _mlp(tmp: Path, name: str, batch: int, steps: int = 60, ckpt: int = 50) -> Path:
    f = tmp / f"{name}.yaml"
    f.write_text(MLP.format(name=name, steps=steps, batch=batch, ckpt=ckpt, out=tmp / name))
    return f


def test_cnn_digits_config_reaches_95_percent_and_is_registered(home: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "cnn"
    r = maas("train", str(ROOT / "configs/cnn-digits.yaml"), "--set", f"output.dir={out}", env=home)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    info = _show("cnn-digits", home)
    assert info["operation"] == "train" and info["family"] == "maas-cnn"
    assert info["metrics"]["test_accuracy"] >= 0.95
    lineage = info["metrics"]["lineage"]
    assert lineage["data_digest"].startswith("sklearn-digits-") and "arch: cnn" in lineage["config_yaml"]
    assert (out / "loss.png").exists() and (out / "metrics.jsonl").exists()
    # The exported model reproduces the registered accuracy on the same test rows.
    from maas.train.config import load_config
    from maas.train.data import load_data

    data = load_data(load_config(ROOT / "configs/cnn-digits.yaml"))
    with torch.no_grad():
        acc = float((load_exported(out / "model")(data.test.x).argmax(-1) == data.test.y).float().mean())
    assert acc == pytest.approx(info["metrics"]["test_accuracy"])
    # The registry records what the served model takes and gives (test_tensor_serving serves it).
    assert info["signature"]["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert info["signature"]["labels"] == [str(i) for i in range(10)]


def test_ddp_two_processes_match_one_process_with_twice_the_batch(
    home: dict[str, str], tmp_path: Path
) -> None:
    one = maas("train", str(_mlp(tmp_path, "one", 32)), "--no-register", env=home)
    assert one.returncode == 0, one.stderr
    two = maas("train", str(_mlp(tmp_path, "two", 16)), "--nproc", "2", "--no-register", env=home)
    assert two.returncode == 0, two.stderr
    assert "rank 1" in two.stderr or "rank 0" in two.stderr
    a, b = _params(tmp_path / "one/model"), _params(tmp_path / "two/model")
    assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())
    # fp16 gradient compression: close to exact, not identical.
    fp16 = maas(
        "train", str(_mlp(tmp_path, "fp16", 16)), "--nproc", "2", "--no-register",
        "--set", "distributed.compression=fp16", env=home,
    )  # fmt: skip
    assert fp16.returncode == 0, fp16.stderr
    c = _params(tmp_path / "fp16/model")
    assert torch.allclose(a, c, atol=1e-2) and not torch.equal(a, c)
    # PowerSGD (rank-1 gradients, error feedback) still learns the task.
    psgd = maas(
        "train", str(_mlp(tmp_path, "psgd", 16, steps=120)), "--nproc", "2",
        "--set", "distributed.compression=powersgd", env=home,
    )  # fmt: skip
    assert psgd.returncode == 0, psgd.stderr
    assert _show("psgd", home)["metrics"]["test_accuracy"] >= 0.85


def _kill_rank(proc: subprocess.Popen[str], rank: str) -> int:
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == rank and "maas.train" in " ".join(child.cmdline()):
                child.send_signal(signal.SIGKILL)
                return child.pid
        except psutil.Error:
            continue
    return 0


def test_killed_worker_is_restarted_and_resumes_to_the_same_result(
    home: dict[str, str], tmp_path: Path
) -> None:
    steps = 3000
    clean = maas(
        "train", str(_mlp(tmp_path, "clean", 16, steps, 100)), "--nproc", "2", "--no-register", env=home
    )
    assert clean.returncode == 0, clean.stderr
    cfg = _mlp(tmp_path, "faulty", 16, steps, 100)
    log = (tmp_path / "faulty.log").open("w")  # a file, not a pipe nobody reads while it runs
    proc = subprocess.Popen(
        [sys.executable, "-m", "maas.cli.main", "train", str(cfg), "--nproc", "2", "--max-restarts", "1", "--no-register"],
        env=home, stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    metrics = tmp_path / "faulty" / "metrics.jsonl"
    killed = 0
    deadline = time.time() + 120
    while time.time() < deadline and not killed:
        rows = metrics.read_text().splitlines() if metrics.exists() else []
        if rows and json.loads(rows[-1])["step"] >= 400:
            killed = _kill_rank(proc, "1")
        time.sleep(0.05)
    proc.wait(timeout=300)
    out = (tmp_path / "faulty.log").read_text()
    assert killed, out
    assert proc.returncode == 0, out
    assert "resuming from step" in out
    done = json.loads(metrics.read_text().splitlines()[-1])
    assert done["step"] == steps
    a, b = _params(tmp_path / "clean/model"), _params(tmp_path / "faulty/model")
    assert torch.allclose(a, b, atol=1e-6), float((a - b).abs().max())


def test_lm_trained_on_wikitext_is_registered_and_served(home: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "lm"
    r = maas(
        "train", str(ROOT / "configs/lm-wikitext.yaml"),
        "--set", "train.steps=300", "--set", "train.eval_every=100", "--set", f"output.dir={out}",
        env=home,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    m = _show("wikitext-lm", home)["metrics"]
    assert m["val_perplexity"] < m["unigram_perplexity"] / 3, m
    assert m["test_perplexity"] < m["unigram_perplexity"] / 3, m

    server = start_server("wikitext-lm", "--max-model-len", "256")
    try:
        client = OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        assert "wikitext-lm" in {c.id for c in client.models.list().data}
        c = client.completions.create(
            model="wikitext-lm", prompt="The game was released in", max_tokens=16, temperature=0
        )
        assert c.usage.completion_tokens >= 1 and c.choices[0].text.strip()
    finally:
        stop_server(server)


def test_parameter_server_sync_matches_one_process_and_resumes(home: dict[str, str], tmp_path: Path) -> None:
    const = ["--set", "schedule.kind=constant", "--no-register"]
    one = maas("train", str(_mlp(tmp_path, "one", 32)), *const, env=home)
    assert one.returncode == 0, one.stderr
    ps = ["--strategy", "ps", "--num-servers", "2", "--nproc", "2", *const]
    r = maas("train", str(_mlp(tmp_path, "ps", 16)), *ps, env=home)
    assert r.returncode == 0, r.stderr
    assert "parameter server: 2 workers, 2 servers (sync)" in r.stderr
    full = _params(tmp_path / "ps/model")
    assert torch.allclose(_params(tmp_path / "one/model"), full, atol=1e-5)
    # Stopped after the step-50 checkpoint, resumed: the same weights (the servers reload their shards).
    part = _mlp(tmp_path, "part", 16)
    r = maas("train", str(part), *ps, "--set", "train.steps=50", env=home)
    assert r.returncode == 0, r.stderr
    r = maas("train", str(part), *ps, "--resume", env=home)
    assert r.returncode == 0 and "resuming from step 50" in r.stderr, r.stderr
    assert torch.equal(_params(tmp_path / "part/model"), full)


def test_parameter_server_async_converges_on_digits(home: dict[str, str], tmp_path: Path) -> None:
    r = maas(
        "train", str(ROOT / "configs/cnn-digits.yaml"), "--strategy", "ps", "--mode", "async",
        "--nproc", "2", "--set", f"output.dir={tmp_path / 'async'}", env=home,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "(async, staleness 4)" in r.stderr
    assert _show("cnn-digits", home)["metrics"]["test_accuracy"] >= 0.95


def test_two_nodes_torchrun_and_maas_train_match_one_process(home: dict[str, str], tmp_path: Path) -> None:
    """The multi-machine commands, with both "machines" on localhost meeting at a c10d rendezvous:
    one node started with torchrun directly, the other with `maas train --nnodes 2`."""
    from tests.integration.conftest import free_port

    one = maas("train", str(_mlp(tmp_path, "one", 32)), "--no-register", env=home)
    assert one.returncode == 0, one.stderr
    cfg = _mlp(tmp_path, "nodes", 16)
    endpoint = f"127.0.0.1:{free_port()}"
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        endpoint,
        "-m",
        "maas.train",
        str(cfg),
        "--no-register",
    ]
    via_maas = [
        sys.executable, "-m", "maas.cli.main", "train", str(cfg), "--nnodes", "2", "--rdzv-endpoint", endpoint,
        "--no-register",
    ]  # fmt: skip
    env = {**home, "OMP_NUM_THREADS": "1", "LOGLEVEL": "INFO"}  # the agents say where they wait
    logs = [tmp_path / "torchrun.log", tmp_path / "maas.log"]
    nodes = []
    for c, log in zip((torchrun, via_maas), logs, strict=True):
        with log.open("w") as f:  # files, not pipes: a node never blocks on a full pipe nobody reads
            nodes.append(subprocess.Popen(c, env=env, stdout=f, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + 300
    try:
        for p in nodes:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for p in nodes:
            p.kill()
            p.wait()
    outs = [f"--- {log.name}\n{log.read_text()[-6000:]}" for log in logs]
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(outs)
    assert torch.allclose(_params(tmp_path / "one/model"), _params(tmp_path / "nodes/model"), atol=1e-5)


def test_csv_mlp_with_cross_validation(home: dict[str, str], tmp_path: Path) -> None:
    r = maas(
        "train", str(ROOT / "configs/mlp-wine.yaml"), "--set", f"output.dir={tmp_path / 'wine'}", env=home
    )
    assert r.returncode == 0, r.stderr
    assert "5-fold cross-validation accuracy" in r.stderr
    m = _show("mlp-wine", home)["metrics"]
    assert m["cv_accuracy_mean"] >= 0.9 and 0 <= m["cv_accuracy_std"] < 0.1
    assert m["test_accuracy"] >= 0.9
    assert m["lineage"]["data_digest"].startswith("sha256:")


def test_lora_fine_tune_of_a_registered_llm_keeps_it_working(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LoRA on SmolLM2 (from the registry), merged on export, registered with its parent, served
    with the base's chat template: it still knows the capital of France."""
    h = str(tmp_path / "home")
    monkeypatch.setenv("MAAS_HOME", h)
    env = {**os.environ, "MAAS_HOME": h, "MAAS_AUTO_IMPORT_BUILTINS": "1"}
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(
        "name: smol-wiki\nmodel:\n  base: smollm2-135m-instruct\n  lora: {rank: 4, alpha: 8}\n"
        f"data: {{kind: text, train: {ROOT.parent / 'shared/data/wikitext-2/valid.txt'}, "
        "tokenizer: smollm2-135m-instruct, block_size: 64, max_documents: 40}\n"
        "optim: {name: adamw, lr: 1.0e-4}\ntrain: {steps: 4, batch_size: 4, eval_every: 4, log_every: 1}\n"
        f"output: {{dir: {tmp_path / 'ft'}}}\n"
    )
    r = maas("train", str(cfg), env=env)
    assert r.returncode == 0, r.stderr
    assert "LoRA on 60 layers" in r.stderr
    info = _show("smol-wiki", env)
    assert info["parent"] == "smollm2-135m-instruct:latest" and info["family"] == "llama"
    assert info["metrics"]["val_perplexity"] < info["metrics"]["unigram_perplexity"]
    server = start_server("smol-wiki", "--max-model-len", "256", env=env)
    try:
        client = OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        msg = [{"role": "user", "content": "What is the capital of France?"}]
        c = client.chat.completions.create(model="smol-wiki", messages=msg, temperature=0, max_tokens=20)
        assert "Paris" in c.choices[0].message.content
    finally:
        stop_server(server)
