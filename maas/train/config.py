"""The training configuration: one YAML file, read into frozen dataclasses.

    cfg = load_config("configs/cnn-digits.yaml", overrides=["train.steps=50"])

Relative data paths are relative to the YAML file. Unknown keys are errors (a typo must not be
silently ignored), and so are values of the wrong type.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maas.errors import MaasError


class ConfigError(MaasError):
    """The training YAML file is missing, unreadable or wrong."""

    kind = "config_error"


@dataclass(frozen=True)
class ModelSection:
    arch: str = "mlp"  # mlp | cnn | rnn | rnn-lm | llama
    params: dict[str, Any] = field(default_factory=dict)
    base: str | None = None  # train a registered LLM or maas classifier (name[:tag]) instead of `arch`
    lora: dict[str, Any] | None = None  # {rank, alpha, targets}: LoRA adapters, merged on export


@dataclass(frozen=True)
class DataSection:
    kind: str = "digits"  # text | digits | csv | arrays
    train: str | None = None  # text / CSV / .npz file or URL (fsspec)
    test: str | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.2  # when no `test` file is given (classic datasets)
    tokenizer: str = "bpe"  # "bpe" (trained on the corpus) or a registered model's name
    vocab_size: int = 4096  # BPE vocabulary
    block_size: int = 128  # tokens per training sequence
    target: str | None = None  # CSV label column (default: the last)
    text_field: str = "text"  # JSONL corpora: the field holding each document
    max_documents: int | None = None  # cap on text lines read (tests)
    split_seed: int | None = None  # shuffles the test/validation split of tables (default: the run's seed)


@dataclass(frozen=True)
class OptimSection:
    name: str = "adamw"  # sgd | adam | adamw
    lr: float = 1e-3
    momentum: float = 0.9  # sgd
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0  # decoupled for adamw, L2 in the gradient for sgd/adam
    l1: float = 0.0  # L1 penalty added to the loss
    l2: float = 0.0  # L2 penalty added to the loss (any optimizer)


@dataclass(frozen=True)
class ScheduleSection:
    kind: str = "constant"  # constant | cosine | step | plateau
    warmup_steps: int = 0
    min_lr: float = 0.0  # cosine floor
    step_size: int = 1000  # step: every step_size steps multiply by gamma
    gamma: float = 0.1
    patience: int = 2  # plateau: evaluations without improvement before lr *= factor
    factor: float = 0.5


@dataclass(frozen=True)
class TrainSection:
    steps: int | None = None  # optimizer steps; or
    epochs: float | None = None  # passes over the training split
    batch_size: int = 32  # per process
    grad_accum: int = 1
    clip_grad_norm: float | None = None
    precision: str = "fp32"  # fp32 | bf16 (autocast; CUDA or a CPU with native bf16)
    eval_every: int = 100
    checkpoint_every: int = 100
    log_every: int = 10
    folds: int | None = None  # k-fold cross-validation (classic models)
    device: str = "auto"


@dataclass(frozen=True)
class DistributedSection:
    strategy: str = "ddp"  # ddp | ps
    backend: str = "auto"  # gloo on CPU, nccl on GPU
    compression: str = "none"  # none | fp16 | powersgd (DDP communication hooks)
    powersgd_rank: int = 1
    num_servers: int = 1  # parameter server: processes holding parameter shards
    mode: str = "sync"  # parameter server: sync | async
    staleness: int = 4  # async: how many versions a worker's gradient may lag


@dataclass(frozen=True)
class DistillSection:
    teacher: str | None = None  # a registered or built-in model whose softened outputs the student learns
    temperature: float = 2.0  # both distributions are softened by it; the KL term is scaled by its square
    alpha: float = 0.5  # weight of the KL term (1 - alpha: the hard-label cross-entropy)


@dataclass(frozen=True)
class OutputSection:
    dir: str | None = None  # default: runs/<name>
    register: bool = True
    tag: str = "latest"


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs."""

    name: str
    seed: int = 0
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    train: TrainSection = field(default_factory=TrainSection)
    distributed: DistributedSection = field(default_factory=DistributedSection)
    distill: DistillSection = field(default_factory=DistillSection)
    output: OutputSection = field(default_factory=OutputSection)
    source: str = ""  # the YAML text (stored as lineage)
    base_dir: str = "."  # the YAML file's directory

    def path(self, p: str) -> str:
        """A data path from the file: URLs as given, relative paths against the YAML's folder."""
        p = os.path.expandvars(os.path.expanduser(p))
        if "://" in p or os.path.isabs(p):
            return p
        return str((Path(self.base_dir) / p).resolve())

    def out_dir(self) -> Path:
        """Where checkpoints, logs and the exported model go."""
        return Path(self.path(self.output.dir)) if self.output.dir else Path("runs") / self.name

    def as_dict(self) -> dict[str, Any]:
        """Plain form (lineage, checkpoints)."""
        d = dataclasses.asdict(self)
        d.pop("source")
        return d


_SECTIONS = {
    "model": ModelSection,
    "data": DataSection,
    "optim": OptimSection,
    "schedule": ScheduleSection,
    "train": TrainSection,
    "distributed": DistributedSection,
    "distill": DistillSection,
    "output": OutputSection,
}


def _check(value: Any, default: Any, where: str) -> Any:
    """Coerce YAML scalars (1e-3 arrives as a string in YAML 1.1) and refuse wrong types."""
    if default is None or value is None:
        return value
    try:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError
            return value
        if isinstance(default, int):
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if isinstance(default, str):
            if not isinstance(value, str):
                raise ValueError
            return value
        if isinstance(default, tuple):
            return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {type(default).__name__}, got {value!r}") from None
    return value


_NUMERIC_OPTIONAL = {
    "steps": int,
    "epochs": float,
    "clip_grad_norm": float,
    "folds": int,
    "max_documents": int,
    "split_seed": int,
}


def _section(cls: type, raw: Any, name: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"'{name}' must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    defaults = cls()
    kw: dict[str, Any] = {}
    for k, v in raw.items():
        if k not in fields:
            raise ConfigError(f"unknown key '{name}.{k}' (known: {', '.join(fields)})")
        d = getattr(defaults, k)
        if d is None and k in _NUMERIC_OPTIONAL and v is not None:
            try:
                v = _NUMERIC_OPTIONAL[k](float(v)) if _NUMERIC_OPTIONAL[k] is int else float(v)
            except (TypeError, ValueError):
                raise ConfigError(f"{name}.{k}: expected a number, got {v!r}") from None
        kw[k] = _check(v, d, f"{name}.{k}")
    return cls(**kw)


def _set(raw: dict[str, Any], dotted: str) -> None:
    """Apply one `a.b=value` override (value parsed as YAML)."""
    import yaml

    if "=" not in dotted:
        raise ConfigError(f"override {dotted!r} is not of the form section.key=value")
    key, value = dotted.split("=", 1)
    parts = key.strip().split(".")
    node = raw
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: '{p}' is not a section")
    node[parts[-1]] = yaml.safe_load(value)
    other = {"train.steps": "epochs", "train.epochs": "steps"}.get(key.strip())
    if other:  # steps and epochs exclude each other: the override replaces the file's choice
        node.pop(other, None)


def parse_config(text: str, base_dir: str = ".", overrides: list[str] | None = None) -> TrainConfig:
    """A TrainConfig from YAML text."""
    import yaml

    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"the training file is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError("the training file must be a YAML mapping")
    for o in overrides or []:
        _set(raw, o)
    unknown = set(raw) - set(_SECTIONS) - {"name", "seed"}
    if unknown:
        raise ConfigError(f"unknown top-level key(s): {', '.join(sorted(unknown))}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError("the training file needs a 'name' (the registered model's name)")
    sections = {k: _section(cls, raw.get(k), k) for k, cls in _SECTIONS.items()}
    cfg = TrainConfig(
        name=name,
        seed=_check(raw.get("seed", 0), 0, "seed"),
        source=text,
        base_dir=base_dir,
        **sections,
    )
    validate(cfg)
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read and check a training YAML file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read training file {str(p)!r}: {e}") from None
    return parse_config(text, str(p.resolve().parent), overrides)


def _one_of(value: str, allowed: tuple[str, ...], where: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{where} must be one of {', '.join(allowed)}, got {value!r}")


def validate(cfg: TrainConfig) -> None:
    """Refuse values that cannot work, with the key that is wrong."""
    from maas.models.zoo import ARCHITECTURES

    if cfg.model.base is None:
        _one_of(cfg.model.arch, ARCHITECTURES, "model.arch")
    _one_of(cfg.data.kind, ("text", "digits", "csv", "arrays"), "data.kind")
    _one_of(cfg.optim.name, ("sgd", "adam", "adamw"), "optim.name")
    _one_of(cfg.schedule.kind, ("constant", "cosine", "step", "plateau"), "schedule.kind")
    _one_of(cfg.train.precision, ("fp32", "bf16"), "train.precision")
    _one_of(cfg.distributed.strategy, ("ddp", "ps"), "distributed.strategy")
    _one_of(cfg.distributed.compression, ("none", "fp16", "powersgd"), "distributed.compression")
    _one_of(cfg.distributed.mode, ("sync", "async"), "distributed.mode")
    t = cfg.train
    if (t.steps is None) == (t.epochs is None):
        raise ConfigError("give exactly one of train.steps and train.epochs")
    checks = [
        (t.steps is None or t.steps > 0, "train.steps must be > 0"),
        (t.epochs is None or t.epochs > 0, "train.epochs must be > 0"),
        (t.batch_size > 0, "train.batch_size must be > 0"),
        (t.grad_accum > 0, "train.grad_accum must be > 0"),
        (t.eval_every > 0 and t.checkpoint_every > 0 and t.log_every > 0, "train.*_every must be > 0"),
        (t.folds is None or t.folds >= 2, "train.folds must be >= 2"),
        (cfg.optim.lr > 0, "optim.lr must be > 0"),
        (
            0 <= cfg.data.val_fraction < 1 and 0 <= cfg.data.test_fraction < 1,
            "data fractions must be in [0, 1)",
        ),
        (cfg.data.block_size >= 2, "data.block_size must be >= 2"),
        (cfg.data.vocab_size >= 260, "data.vocab_size must be >= 260 (bytes + special tokens)"),
        (cfg.distributed.num_servers >= 1, "distributed.num_servers must be >= 1"),
        (cfg.distributed.staleness >= 0, "distributed.staleness must be >= 0"),
        (cfg.distill.temperature > 0, "distill.temperature must be > 0"),
        (0 <= cfg.distill.alpha <= 1, "distill.alpha must be in [0, 1]"),
        (
            cfg.distill.teacher is None or cfg.distributed.strategy == "ddp",
            "distillation trains with distributed.strategy ddp (one process or several)",
        ),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)
    from maas.errors import InvalidRequestError
    from maas.store.registry import parse_ref

    try:
        parse_ref(f"{cfg.name}:{cfg.output.tag}")
    except InvalidRequestError:
        raise ConfigError(
            f"name {cfg.name!r} / output.tag {cfg.output.tag!r} cannot be a registry name: use lowercase "
            "letters, digits, '.', '_', '-'"
        ) from None
    if cfg.data.kind in ("text", "csv", "arrays") and not cfg.data.train:
        raise ConfigError(f"data.train (a file or URL) is required for data.kind {cfg.data.kind!r}")
