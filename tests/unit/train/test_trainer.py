"""The loop: exact resume, accumulation equivalence, atomic checkpoints, reaching accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from maas.errors import MaasError
from maas.train import checkpoint
from maas.train.config import TrainConfig, parse_config
from maas.train.data import load_data
from maas.train.distributed import DistContext
from maas.train.run import build_model, seed_everything
from maas.train.trainer import Trainer


def _cfg(out: Path, extra: str = "", steps: int = 30) -> TrainConfig:
    return parse_config(
        f"name: t\nseed: 3\nmodel: {{arch: mlp, params: {{hidden: [32], dropout: 0.1}}}}\n"
        f"data: {{kind: digits}}\noptim: {{name: sgd, lr: 0.05, momentum: 0.9}}\n"
        f"schedule: {{kind: cosine, warmup_steps: 5}}\n"
        f"train: {{steps: {steps}, batch_size: 16, eval_every: 10, checkpoint_every: 10, log_every: 5{extra}}}\n"
        f"output: {{dir: '{out}'}}"
    )


def _trainer(cfg: TrainConfig) -> Trainer:
    seed_everything(cfg.seed)
    data = load_data(cfg)
    return Trainer(cfg, data, build_model(cfg, data), DistContext(), cfg.out_dir())


def _flat(t: Trainer) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in t.model.parameters()])


def test_resume_continues_exactly(tmp_path: Path) -> None:
    """Stopping after a checkpoint and resuming gives the weights and loss of an unbroken run
    (dropout on: the RNG state is part of the checkpoint)."""
    straight = _trainer(_cfg(tmp_path / "a", steps=100))
    r1 = straight.fit()

    first = _trainer(_cfg(tmp_path / "b", steps=100))
    first.total_steps = 40  # "killed" right after the step-40 checkpoint
    first.fit()
    resumed = _trainer(_cfg(tmp_path / "b", steps=100))
    st = checkpoint.load(tmp_path / "b")
    assert st is not None and st["position"]["step"] == 40
    resumed.restore(st)
    r2 = resumed.fit()
    assert torch.equal(_flat(straight), _flat(resumed))
    assert r1.metrics["test_loss"] == r2.metrics["test_loss"]
    # The step-100 epoch boundary: digits' 1294 training rows are 80 batches of 16.
    assert resumed.pos.epoch == 1


def test_accumulation_equals_a_bigger_batch(tmp_path: Path) -> None:
    """Two accumulated micro-batches of 16 step like one batch of 32 (no dropout)."""
    src = _cfg(tmp_path / "a").source.replace("dropout: 0.1", "dropout: 0.0")
    a = _trainer(parse_config(src.replace("batch_size: 16", "batch_size: 32")))
    b = _trainer(parse_config(src.replace("batch_size: 16", "batch_size: 16, grad_accum: 2")))
    a.fit()
    b.fit()
    assert torch.allclose(_flat(a), _flat(b), atol=1e-5)


def test_metrics_log_and_curve(tmp_path: Path) -> None:
    t = _trainer(_cfg(tmp_path / "m", steps=20))
    t.fit()
    rows = [json.loads(x) for x in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train_loss" in r] == [5, 10, 15, 20]
    assert [r["step"] for r in rows if "val_accuracy" in r] == [10, 20]
    assert all(r["samples_per_s"] > 0 for r in rows if "train_loss" in r)
    assert (tmp_path / "m" / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_cnn_learns_digits(tmp_path: Path) -> None:
    cfg = parse_config(
        "name: c\nmodel: {arch: cnn, params: {channels: [8, 16], hidden: 32}}\ndata: {kind: digits}\n"
        "optim: {name: adam, lr: 0.003}\ntrain: {epochs: 6, batch_size: 32}\n"
        f"output: {{dir: '{tmp_path}'}}"
    )
    res = _trainer(cfg).fit()
    assert res.metrics["test_accuracy"] >= 0.9


def test_interrupted_checkpoint_write_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint.save(tmp_path, {"position": {"step": 1}})

    def boom(*a: object, **k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        checkpoint.save(tmp_path, {"position": {"step": 2}})
    monkeypatch.undo()
    st = checkpoint.load(tmp_path)
    assert st is not None and st["position"]["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(MaasError, match="unreadable"):
        checkpoint.load(tmp_path)


def test_bf16_autocast_path_trains(tmp_path: Path) -> None:
    """bf16 falls back to fp32 on a CPU without native bf16; the bf16 path itself still computes."""
    from maas.train.trainer import bf16_supported

    t = _trainer(
        parse_config(_cfg(tmp_path, steps=10).source.replace("log_every: 5", "log_every: 5, precision: bf16"))
    )
    assert t.precision == ("bf16" if bf16_supported(torch.device("cpu")) else "fp32")
    t.precision = "bf16"  # force autocast
    res = t.fit()
    assert 0 < res.metrics["test_loss"] < 10
