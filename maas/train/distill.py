"""Knowledge distillation (Hinton et al., 2015): the student learns the teacher's softened outputs.

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels)

A `distill:` section in a training YAML (or `maas distill --teacher NAME --student CONFIG.yaml`) runs
the ordinary training loop, alone or on several DDP processes, with a frozen teacher beside the student.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from maas.errors import MaasError

log = logging.getLogger("maas.train")


def load_teacher(name: str, device: torch.device, task: str) -> nn.Module:
    """A registered or built-in model (an LM or a classifier trained by maas), frozen, in float32, for a
    student whose data is for `task` ("lm" or "classify")."""
    from maas.store.locate import local_path, locate

    found = locate(name)
    if (found.kind == "llm") != (task == "lm"):
        what = "an LM" if found.kind == "llm" else f"a {found.kind} model"
        raise MaasError(f"teacher {name!r} is {what} but the student learns {'text' if task == 'lm' else 'to classify'}: "
                        "teacher and student must do the same task")  # fmt: skip
    path = local_path(found)
    if found.kind == "llm":
        from maas.engine.llm.loader import load_lm

        model: nn.Module = load_lm(path, device="cpu", dtype="float32").model
    elif found.kind == "tensor" and (path / "model.safetensors").exists():
        from maas.models.exported import load_exported

        model = load_exported(path)
    else:
        raise MaasError(
            f"teacher {name!r} is a {found.kind} model; distillation needs an LM or a maas classifier"
        )
    log.info("teacher %s: %.1fM parameters", name, sum(p.numel() for p in model.parameters()) / 1e6)
    return model.to(device).eval().requires_grad_(False)


def distill_loss(
    student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """Hinton's loss for logits (B, [T,] V) of student and teacher and labels (B, [T])."""
    V = student.shape[-1]
    if teacher.shape[-1] != V:
        raise MaasError(
            f"the teacher predicts {teacher.shape[-1]} classes/tokens, the student {V}: they must share the "
            "labels (for LMs: set data.tokenizer to the teacher)"
        )
    s, t = student.reshape(-1, V).float(), teacher.reshape(-1, V).float()
    kl = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                  reduction="batchmean")  # fmt: skip
    hard = F.cross_entropy(s, y.reshape(-1))
    return alpha * temperature**2 * kl + (1 - alpha) * hard
