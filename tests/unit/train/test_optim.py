"""Schedules and penalties."""

from __future__ import annotations

import pytest
import torch

from maas.train.config import OptimSection, ScheduleSection
from maas.train.optim import Schedule, build_optimizer, penalty


def test_warmup_then_cosine_to_the_floor() -> None:
    s = Schedule(ScheduleSection(kind="cosine", warmup_steps=10, min_lr=0.1), 1.0, 110)
    assert s.lr_at(0) == pytest.approx(0.1)
    assert s.lr_at(9) == pytest.approx(1.0)
    assert s.lr_at(60) == pytest.approx(0.55)
    assert s.lr_at(110) == pytest.approx(0.1)


def test_step_decay() -> None:
    s = Schedule(ScheduleSection(kind="step", step_size=10, gamma=0.5), 1.0, 100)
    assert [s.lr_at(i) for i in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]


def test_plateau_halves_after_patience_and_survives_a_checkpoint() -> None:
    s = Schedule(ScheduleSection(kind="plateau", patience=1, factor=0.5), 1.0, 100)
    for loss in (1.0, 0.9, 0.95, 0.95):
        s.observe(loss)
    assert s.lr_at(50) == 0.5
    t = Schedule(ScheduleSection(kind="plateau", patience=1, factor=0.5), 1.0, 100)
    t.load_state_dict(s.state_dict())
    assert t.lr_at(50) == 0.5


def test_penalties_skip_biases() -> None:
    m = torch.nn.Linear(2, 2)
    with torch.no_grad():
        m.weight.fill_(-2.0)
        m.bias.fill_(100.0)
    p = penalty(m, OptimSection(l1=0.1, l2=0.01))
    assert p is not None and float(p.detach()) == pytest.approx(0.1 * 8 + 0.01 * 16)
    assert penalty(m, OptimSection()) is None


def test_optimizers() -> None:
    ps = list(torch.nn.Linear(2, 2).parameters())
    assert isinstance(build_optimizer(ps, OptimSection(name="sgd", nesterov=True)), torch.optim.SGD)
    assert isinstance(build_optimizer(ps, OptimSection(name="adam")), torch.optim.Adam)
    assert isinstance(build_optimizer(ps, OptimSection(name="adamw")), torch.optim.AdamW)
