"""Training streams a prepared dataset: it learns as from the text file, two DDP ranks read disjoint blocks,
and a run stopped and resumed reads exactly the blocks an uninterrupted run reads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from maas.data.prepare import PrepareOptions, prepare

WIKI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "wikitext-2"
MAAS = [sys.executable, "-m", "maas.cli.main"]
CONFIG = """
name: streamed-lm
seed: 0
model:
  arch: llama
  params: {{hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 192,
           max_position_embeddings: 128}}
data:
  kind: text
  train: {train}
  {extra}
  tokenizer: smollm2-135m-instruct
  block_size: 64
optim: {{name: adamw, lr: 3.0e-3}}
train: {{steps: {steps}, batch_size: 8, eval_every: 1000, checkpoint_every: 1000, log_every: 5}}
output: {{dir: {out}}}
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "wikitext"
    prepare(
        PrepareOptions((str(WIKI / "valid.txt"),), str(out), "smollm2-135m-instruct", 64, val_fraction=0.1)
    )
    return out


def train(tmp_path: Path, name: str, train_path: str, steps: int, *args: str, extra: str = "",
          trace: Path | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(CONFIG.format(train=train_path, extra=extra, steps=steps, out=tmp_path / name))
    env = {**os.environ, "MAAS_HOME": str(tmp_path / "home")}
    if trace:
        trace.mkdir(exist_ok=True)
        env["MAAS_DATA_TRACE"] = str(trace)
    return subprocess.run([*MAAS, "train", str(cfg), "--no-register", *args], capture_output=True, text=True,
                          env=env, timeout=600)  # fmt: skip


def rows(trace: Path, split: str = "train") -> dict[str, list[int]]:
    return {f.name: [int(r) for line in f.read_text().split("\n") for r in line.split()]
            for f in sorted(trace.glob(f"{split}-*.txt"))}  # fmt: skip


def final(tmp_path: Path, name: str) -> dict:
    return json.loads((tmp_path / name / "metrics.jsonl").read_text().strip().splitlines()[-1])


@pytest.mark.slow
def test_training_on_the_prepared_dataset_learns_as_from_the_text(dataset: Path, tmp_path: Path) -> None:
    a = train(tmp_path, "prepared", str(dataset), 40)
    assert a.returncode == 0, a.stderr
    b = train(tmp_path, "text", str(WIKI / "valid.txt"), 40, extra="val_fraction: 0.1")
    assert b.returncode == 0, b.stderr
    streamed, text = final(tmp_path, "prepared")["val_loss"], final(tmp_path, "text")["val_loss"]
    print(f"validation loss after 40 steps: prepared {streamed:.3f}, text file {text:.3f}")
    assert abs(streamed - text) / text < 0.08


def test_two_ranks_read_disjoint_blocks(dataset: Path, tmp_path: Path) -> None:
    r = train(tmp_path, "ddp", str(dataset), 10, "--nproc", "2", trace=tmp_path / "trace")
    assert r.returncode == 0, r.stderr
    per_rank = rows(tmp_path / "trace")
    assert len(per_rank) == 2, per_rank.keys()
    a, b = (set(v) for v in per_rank.values())
    assert len(a) == len(b) == 10 * 8 and not a & b


@pytest.mark.slow
def test_parameter_server_workers_read_disjoint_blocks(dataset: Path, tmp_path: Path) -> None:
    r = train(tmp_path, "ps", str(dataset), 6, "--strategy", "ps", "--num-servers", "1", "--nproc", "2",
              trace=tmp_path / "trace")  # fmt: skip
    assert r.returncode == 0, r.stderr
    per_worker = rows(tmp_path / "trace")
    assert len(per_worker) == 2, per_worker.keys()  # the server process reads no data
    a, b = (set(v) for v in per_worker.values())
    assert len(a) == len(b) == 6 * 8 and not a & b


def test_a_stopped_run_resumes_at_the_exact_block(dataset: Path, tmp_path: Path) -> None:
    whole = train(tmp_path, "whole", str(dataset), 24, trace=tmp_path / "t-whole")
    assert whole.returncode == 0, whole.stderr
    expected = next(iter(rows(tmp_path / "t-whole").values()))
    cfg_out = tmp_path / "stopped"
    cfg = tmp_path / "stopped.yaml"
    cfg.write_text(CONFIG.format(train=str(dataset), extra="", steps=24, out=cfg_out))
    trace = tmp_path / "t-stopped"
    trace.mkdir()
    env = {**os.environ, "MAAS_HOME": str(tmp_path / "home"), "MAAS_DATA_TRACE": str(trace)}
    proc = subprocess.Popen([*MAAS, "train", str(cfg), "--no-register"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not ((cfg_out / "metrics.jsonl").exists() and (cfg_out / "metrics.jsonl").read_text().strip()):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=300) == 128 + signal.SIGTERM
    resumed = subprocess.run([*MAAS, "train", str(cfg), "--no-register", "--resume"], env=env,
                             capture_output=True, text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    parts = rows(trace)
    assert len(parts) == 2
    first, second = (parts[k] for k in sorted(parts, key=lambda k: (trace / k).stat().st_mtime))
    assert 0 < len(first) < len(expected)
    assert first + second == expected
