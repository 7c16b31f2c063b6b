"""Optimizers, learning-rate schedules and loss penalties from the config.

opt = build_optimizer(model.parameters(), cfg.optim)
sched = Schedule(cfg.schedule, cfg.optim.lr, total_steps)
sched.apply(opt, step)                 # before each optimizer step
sched.observe(val_loss)                # after each evaluation (plateau)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from maas.train.config import OptimSection, ScheduleSection


def build_optimizer(params: Iterable[torch.Tensor], o: OptimSection) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam or AdamW."""
    ps = [p for p in params if p.requires_grad]
    if o.name == "sgd":
        return torch.optim.SGD(
            ps,
            lr=o.lr,
            momentum=o.momentum,
            nesterov=o.nesterov and o.momentum > 0,
            weight_decay=o.weight_decay,
        )
    if o.name == "adam":
        return torch.optim.Adam(ps, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    return torch.optim.AdamW(ps, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)


def penalty(model: nn.Module, o: OptimSection) -> torch.Tensor | None:
    """l1 * sum|w| + l2 * sum w^2 over weight matrices (not biases or norms), or None."""
    if not o.l1 and not o.l2:
        return None
    total: torch.Tensor | None = None
    for p in model.parameters():
        if p.requires_grad and p.dim() >= 2:
            term = (o.l1 * p.abs().sum() if o.l1 else 0) + (o.l2 * p.pow(2).sum() if o.l2 else 0)
            total = term if total is None else total + term  # type: ignore[assignment]
    return total


class Schedule:
    """Linear warmup, then constant / cosine to min_lr / step decay / reduce-on-plateau."""

    def __init__(self, s: ScheduleSection, base_lr: float, total_steps: int):
        self.s = s
        self.base_lr = base_lr
        self.total = max(1, total_steps)
        self.scale = 1.0  # plateau's multiplier
        self.best = math.inf
        self.bad = 0

    def lr_at(self, step: int) -> float:
        """The learning rate for optimizer step `step` (0-based)."""
        s = self.s
        if s.warmup_steps and step < s.warmup_steps:
            return self.base_lr * (step + 1) / s.warmup_steps
        if s.kind == "cosine":
            t = min(1.0, (step - s.warmup_steps) / max(1, self.total - s.warmup_steps))
            return s.min_lr + (self.base_lr - s.min_lr) * 0.5 * (1 + math.cos(math.pi * t))
        if s.kind == "step":
            return self.base_lr * s.gamma ** ((step - s.warmup_steps) // s.step_size)
        if s.kind == "plateau":
            return self.base_lr * self.scale
        return self.base_lr

    def apply(self, opt: torch.optim.Optimizer, step: int) -> float:
        """Set every parameter group's lr for `step`; returns it."""
        lr = self.lr_at(step)
        for g in opt.param_groups:
            g["lr"] = lr
        return lr

    def observe(self, val_loss: float) -> None:
        """Plateau: after `patience` evaluations without improvement, multiply the lr by `factor`."""
        if self.s.kind != "plateau":
            return
        if math.isinf(self.best) or val_loss < self.best - 1e-4 * abs(self.best):
            self.best, self.bad = val_loss, 0
        else:
            self.bad += 1
            if self.bad > self.s.patience:
                self.scale *= self.s.factor
                self.bad = 0

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps."""
        return {"scale": self.scale, "best": self.best, "bad": self.bad}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore from a checkpoint."""
        self.scale, self.best, self.bad = float(d["scale"]), float(d["best"]), int(d["bad"])
