"""Calibration data: text a user gives, and the rows a tensor model was trained on (found through the
registry's lineage).

    text, record = read_calibration("valid.txt", tokens=65536)   # record: file name, sha256, tokens
    data = trained_data("cnn-digits:int8-channel", load)          # the nearest trained ancestor's splits
    rows = calibration_rows("cnn-digits:onnx", load)              # its first training rows, as served

Rebuilding a training split from the config a run recorded is the training room's work: `load` (a
`DataLoader`) is handed in by the caller (the command line passes the trainer's), so that compression
never imports training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from maas.errors import InvalidRequestError

TRAINED_BY = ("train", "distill")  # operations whose lineage records the training config


def read_calibration(path: str | Path, tokens: int) -> tuple[str, dict[str, object]]:
    """Calibration text read once: (its contents, what the lineage records of it: file name, sha256
    digest, tokens used)."""
    if tokens < 1:
        raise InvalidRequestError("--calibration-tokens must be at least 1")
    try:
        raw = Path(path).read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidRequestError(f"cannot read --calibration {str(path)!r}: {e}") from None
    digest = f"sha256:{hashlib.sha256(raw).hexdigest()}"
    return text, {"calibration": Path(path).name, "calibration_digest": digest, "calibration_tokens": tokens}


class Split(Protocol):
    """Inputs and labels of one split."""

    x: torch.Tensor
    y: torch.Tensor


class TrainedData(Protocol):
    """What a training run's data loader gives (maas.train.data.Data has this shape)."""

    task: str
    train: Split
    test: Split
    info: dict[str, object]


@dataclass(frozen=True)
class TrainingRecord:
    """The training config a version's lineage recorded: the YAML as trained (overrides applied) and the
    directory its relative data paths are read from."""

    config: dict[str, object]
    base_dir: str


class DataLoader(Protocol):
    """Rebuilds the data a recorded training config names."""

    def __call__(self, record: TrainingRecord) -> TrainedData: ...


def training_record(ref: str) -> TrainingRecord:
    """The training config of the version `ref` or of its nearest ancestor that was trained by maas."""
    from maas.store.registry import Registry

    reg = Registry()
    info = reg.show(ref)
    chain = [info, *(reg.show(a["model"]) for a in info.lineage or [])]
    for v in chain:
        lineage = v.metrics.get("lineage") if v.operation in TRAINED_BY else None
        if isinstance(lineage, Mapping) and isinstance(lineage.get("config"), Mapping):
            raw = dict(lineage["config"])
            base_dir = str(raw.pop("base_dir", lineage.get("base_dir", ".")))
            return TrainingRecord(raw, base_dir)
    raise InvalidRequestError(f"no version in {ref!r}'s lineage records the data it was trained on")


def trained_data(ref: str, load: DataLoader) -> TrainedData:
    """The data (splits, task) the version (or its nearest trained ancestor) was trained on."""
    return load(training_record(ref))


def served_inputs(data: TrainedData, x: torch.Tensor) -> torch.Tensor:
    """Rows of a training split as the served model takes them: CSV columns un-standardised (a served graph
    standardises inside), anything else as it is."""
    s = data.info.get("standardize")
    if not isinstance(s, Mapping):
        return x
    return x * torch.tensor(s["std"], dtype=x.dtype) + torch.tensor(s["mean"], dtype=x.dtype)


def calibration_rows(ref: str, load: DataLoader, n: int = 256) -> np.ndarray | None:
    """The first `n` rows of the training split `ref`'s lineage records, as the served model takes them
    (float32); None when no ancestor was trained by maas."""
    try:
        data = trained_data(ref, load)
    except InvalidRequestError:
        return None
    rows: np.ndarray = served_inputs(data, data.train.x[:n]).float().numpy()
    return rows
