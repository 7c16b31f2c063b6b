"""One training run in this process: alone, or as one rank of a torchrun job.

python -m maas.train configs/cnn-digits.yaml            # alone
torchrun --nproc-per-node 2 -m maas.train CONFIG        # as ranks of a data-parallel job
"""

from __future__ import annotations

import logging
import os
import random
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from maas.errors import MaasError
from maas.models import zoo
from maas.train import checkpoint
from maas.train.config import TrainConfig
from maas.train.data import Data, Split, describe, kfold, load_data
from maas.train.distributed import DistContext, init_from_env
from maas.train.trainer import Result, Trainer

log = logging.getLogger("maas.train")


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch generators (same seed on every rank: same initial weights)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: TrainConfig, data: Data) -> torch.nn.Module:
    """The model the config names, shaped for the data."""
    if cfg.model.base is not None:
        from maas.train.finetune import load_base

        return load_base(cfg, data)
    return zoo.build(
        cfg.model.arch,
        cfg.model.params,
        input_shape=data.input_shape or None,
        num_classes=data.num_classes,
        vocab_size=data.info.get("vocab_size"),
    )


def _check_same_data(ctx: DistContext, data: Data) -> None:
    """Every rank must hold the same tokens/examples (a tokenizer trained differently would not)."""
    streamed = data.info.get("streamed")  # a prepared dataset's digest covers every block
    mine = (data.digest, 0.0 if streamed else float(data.train.x.double().sum()), len(data.train))
    if ctx.broadcast_object(mine) != mine:
        raise MaasError("ranks built different datasets (different files or tokenizers on different hosts?)")


def cross_validate(cfg: TrainConfig, data: Data, ctx: DistContext) -> dict[str, float]:
    """k-fold cross-validation on train+val: mean and spread of the held-out fold metrics."""
    k = cfg.train.folds or 0
    pool = Split(torch.cat([data.train.x, data.val.x]), torch.cat([data.train.y, data.val.y]))
    scores: dict[str, list[float]] = {}
    for i, (tr, va) in enumerate(kfold(len(pool), k, cfg.seed)):
        seed_everything(cfg.seed + i)
        fold = replace(data, train=pool.subset(tr), val=pool.subset(va))
        out = cfg.out_dir() / f"fold-{i}"
        checkpoint_clear(out)
        trainer = Trainer(cfg, fold, build_model(cfg, fold), ctx, out)
        trainer.fit(final_eval=False)
        held_out = trainer.last_val[1]  # the last step always evaluates the held-out fold
        for key, v in held_out.items():
            scores.setdefault(key, []).append(v)
        log.info("fold %d/%d: %s", i + 1, k, {key: round(v, 4) for key, v in held_out.items()})
    summary: dict[str, float] = {}
    for key, vs in scores.items():
        name = key.removeprefix("val_")
        summary[f"cv_{name}_mean"] = statistics.fmean(vs)
        summary[f"cv_{name}_std"] = statistics.pstdev(vs)
        log.info(
            "%d-fold cross-validation %s: %.4f +- %.4f",
            k,
            name,
            summary[f"cv_{name}_mean"],
            summary[f"cv_{name}_std"],
        )
    return summary


def checkpoint_clear(out: Path) -> None:
    """A fresh run: forget an earlier run's checkpoint and metrics in the same folder."""
    for name in (checkpoint.LAST, "metrics.jsonl"):
        (out / name).unlink(missing_ok=True)


def run(cfg: TrainConfig, resume: bool = False, register: bool = True) -> Result:
    """Train per `cfg` (as this rank), export and register on rank 0; returns the result."""
    ctx = init_from_env(cfg, with_group=cfg.distributed.strategy == "ddp")
    try:
        if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
            resume = True  # torchrun restarted the workers after a failure: continue
        seed_everything(cfg.seed)
        data = load_data(cfg)
        if ctx.is_main:
            log.info("data: %s", describe(data))
        if ctx.initialized:
            _check_same_data(ctx, data)
        out = cfg.out_dir()
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
            if not resume:
                checkpoint_clear(out)
        ctx.barrier()
        extra: dict[str, float] = {}
        if cfg.train.folds:
            if ctx.world > 1:
                raise MaasError("k-fold cross-validation runs on one process (leave out --nproc)")
            extra = cross_validate(cfg, data, ctx)
            seed_everything(cfg.seed)
        if cfg.distributed.strategy == "ps":
            from maas.train.param_server import run_parameter_server

            model = build_model(cfg, data)
            ps_result = run_parameter_server(cfg, data, model, resume)
            if ps_result is None:  # a server, or a worker other than the first
                return Result(0, {})
            result = ps_result
        else:
            student, teacher = build_model(cfg, data), None
            if cfg.distill.teacher is not None:  # after the student: its initial weights are the seed's
                from maas.train.distill import load_teacher

                teacher = load_teacher(cfg.distill.teacher, ctx.device, data.task)
            trainer = Trainer(cfg, data, student, ctx, out, teacher=teacher)
            if resume:
                trainer.resume()
            result = trainer.fit()
            model = trainer.model
        result.metrics.update(extra)
        if ctx.is_main:
            finish(cfg, data, model, result, register)
        # Every rank tears the group down together: a rank that destroyed its gloo group while
        # rank 0 was still exporting sometimes aborted at exit ("terminate called without an
        # active exception"), and its node's agent then skipped torchrun's exit barrier.
        ctx.barrier()
        return result
    finally:
        ctx.shutdown()


def finish(cfg: TrainConfig, data: Data, model: torch.nn.Module, result: Result, register: bool) -> None:
    """Export the model next to the run and register it with its lineage."""
    from maas.train.export import export_model
    from maas.train.export import register as register_model

    if cfg.model.lora is not None:
        from maas.train.lora import merge_lora

        merge_lora(model)
    d = export_model(model, cfg, data, cfg.out_dir() / "model")
    log.info("model written to %s", d)
    if register and cfg.output.register:
        info = register_model(d, cfg, data, result.metrics, result.steps)
        log.info("registered as %s:%s (version %d)", info.name, info.tag, info.version)
