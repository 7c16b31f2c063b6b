"""SIGINT / SIGTERM during training: the step finishes, a checkpoint is written, the run stops with
128 + the signal, and --resume continues exactly; a second signal stops at once."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch

from maas.train import checkpoint
from maas.train.stop import TrainingStopped
from maas.train.trainer import Trainer
from tests.unit.train.test_trainer import _cfg, _flat, _trainer


def _signal_at(monkeypatch: pytest.MonkeyPatch, step: int, *sigs: signal.Signals) -> None:
    """Deliver `sigs` to this process during step `step` (after its bookkeeping, before the boundary)."""
    after = Trainer._after_step

    def hooked(self: Trainer, *a: object) -> None:
        after(self, *a)  # type: ignore[arg-type]
        if self.pos.step == step:
            for s in sigs:
                signal.raise_signal(s)  # its handler has run when this returns (os.kill may merge two)

    monkeypatch.setattr(Trainer, "_after_step", hooked)


def test_sigterm_checkpoints_the_step_and_resume_continues_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = _trainer(_cfg(tmp_path / "a", steps=40))
    straight.fit()

    before = signal.getsignal(signal.SIGTERM)
    _signal_at(monkeypatch, 13, signal.SIGTERM)  # between two periodic checkpoints (every 10 steps)
    stopped = _trainer(_cfg(tmp_path / "b", steps=40))
    with pytest.raises(TrainingStopped) as info:
        stopped.fit()
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is only there while training
    e = info.value
    assert (e.signum, e.step, e.exit_code, e.checkpoint) == (
        signal.SIGTERM,
        13,
        143,
        tmp_path / "b" / "last.pt",
    )
    st = checkpoint.load(tmp_path / "b")
    assert st is not None and st["position"]["step"] == 13

    resumed = _trainer(_cfg(tmp_path / "b", steps=40))
    assert resumed.resume()
    resumed.fit()
    assert torch.equal(_flat(straight), _flat(resumed))


def test_a_second_sigint_stops_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _signal_at(monkeypatch, 5, signal.SIGINT, signal.SIGINT)
    t = _trainer(_cfg(tmp_path, steps=40))
    with pytest.raises(KeyboardInterrupt):
        t.fit()
    assert checkpoint.load(tmp_path) is None  # no checkpoint yet: it did not wait for the step boundary
