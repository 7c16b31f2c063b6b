"""The training YAML: defaults, overrides, and errors that name the wrong key."""

from __future__ import annotations

from pathlib import Path

import pytest

from maas.train.config import ConfigError, load_config, parse_config

BASE = "name: m\ntrain: {steps: 10}\n"


def test_defaults_and_yaml_numbers() -> None:
    cfg = parse_config(BASE + "optim: {lr: 3e-3, betas: [0.9, 0.95]}\n")
    assert cfg.optim.lr == pytest.approx(3e-3)  # YAML 1.1 reads 3e-3 as a string: coerced
    assert cfg.optim.betas == (0.9, 0.95)
    assert cfg.train.batch_size == 32 and cfg.model.arch == "mlp"


def test_overrides_are_parsed_as_yaml() -> None:
    cfg = parse_config(BASE, overrides=["train.steps=25", "model.params={hidden: [8]}", "data.kind=digits"])
    assert cfg.train.steps == 25 and cfg.model.params == {"hidden": [8]}
    cfg = parse_config(BASE, overrides=["train.epochs=2"])  # replaces the file's steps
    assert cfg.train.epochs == 2 and cfg.train.steps is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train: {steps: 1}", "needs a 'name'"),
        (BASE + "optim: {lr: fast}", "optim.lr: expected float"),
        (BASE + "optim: {learning_rate: 0.1}", "unknown key 'optim.learning_rate'"),
        (BASE + "train: {steps: 10, epochs: 2}", "exactly one of train.steps and train.epochs"),
        ("name: m\ntrain: {steps: -1}", "train.steps must be > 0"),
        (BASE + "model: {arch: resnet}", "model.arch must be one of"),
        (BASE + "batch: 3", "unknown top-level key"),
        (BASE + "train: {steps: 2, batch_size: true}", "expected int"),
        ("name: m\ntrain: {steps: 1}\ndata: {kind: text}", "data.train"),
        ("name: [", "not valid YAML"),
        ("name: My Model\ntrain: {steps: 1}", "cannot be a registry name"),
    ],
)
def test_bad_files_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("'", "'")):
        parse_config(text)


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    f = tmp_path / "sub" / "c.yaml"
    f.write_text("name: m\ntrain: {steps: 1}\ndata: {kind: csv, train: ../data.csv}\n")
    cfg = load_config(f)
    assert cfg.path(cfg.data.train or "") == str(tmp_path / "data.csv")
    assert cfg.path("memory://x.csv") == "memory://x.csv"


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read training file"):
        load_config("/nonexistent/train.yaml")
