"""Knowledge distillation as a compression method: a smaller student learns a teacher's softened outputs.

    maas distill --teacher cnn-digits --student configs/distill/cnn-digits-small.yaml [--nproc 2]

The source model is the teacher. The student is trained by the ordinary training loop (maas.train: one
process or several DDP ranks under torchrun, a frozen teacher beside each), which registers it with the
training lineage (`maas eval` rebuilds its test split from it). Compression and training are sibling rooms
that never import each other, so the loop is handed in: `DistillOptions.trainer`, a `StudentTrainer` the
command line wires to maas.train.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from maas.compress.method import Method, Options, Result, expect
from maas.compress.source import Source
from maas.errors import InvalidRequestError

if TYPE_CHECKING:
    from maas.store.registry import VersionInfo


class StudentTrainer(Protocol):
    """Trains and registers the student `options.student` describes against `teacher` (a model reference)."""

    def __call__(self, teacher: str, options: DistillOptions) -> VersionInfo: ...


@dataclass(frozen=True)
class DistillOptions(Options):
    """The student's training YAML and the distillation settings (None: the file's, else the defaults)."""

    student: Path | None = None
    data: str | None = None  # text data for an LM student (replaces data.train)
    temperature: float | None = None
    alpha: float | None = None
    nproc: int = 1
    overrides: tuple[str, ...] = ()  # KEY=VALUE settings of the YAML
    resume: bool = False
    trainer: StudentTrainer | None = None

    def __post_init__(self) -> None:
        if self.student is None:
            raise InvalidRequestError("distillation trains a student: give --student CONFIG.yaml")
        if self.temperature is not None and self.temperature <= 0:
            raise InvalidRequestError("--temperature must be > 0")
        if self.alpha is not None and not 0 <= self.alpha <= 1:
            raise InvalidRequestError("--alpha must be in [0, 1]")
        if self.nproc < 1:
            raise InvalidRequestError("--nproc must be at least 1")


class Distill(Method):
    """Hinton's distillation: alpha * T^2 * KL(teacher || student, softened by T) + (1 - alpha) * CE."""

    def __init__(self) -> None:
        about = "train a smaller --student on the teacher's softened outputs"
        super().__init__("distill", "distill", ("llm", "tensor"), DistillOptions, about)

    def apply(self, source: Source, options: Options) -> Result:
        """Train the student with the teacher (the training run registers it)."""
        o = expect(options, DistillOptions)
        if o.trainer is None:
            raise InvalidRequestError("distillation needs a training loop: run it as `maas distill`")
        found = source.found
        info = o.trainer(found.name if found.origin == "registry" else found.source, o)
        return Result({}, {}, dict(info.parameters or {}), info.tag, registered=info)
