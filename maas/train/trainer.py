"""The training loop: micro-batches, accumulation, clipping, schedule, evaluation, checkpoints.

The same loop runs alone or as one rank of a data-parallel group: a DistributedSampler (one
replica when alone) decides the order, so that N ranks with batch b step exactly like one
process with batch N*b. Position, optimizer, schedule and RNG states are checkpointed, so
`resume` continues the run as if it had never stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from maas.errors import MaasError
from maas.train import checkpoint
from maas.train.config import TrainConfig
from maas.train.data import Data, Split
from maas.train.distill import distill_loss
from maas.train.distributed import DistContext, no_sync, wrap_ddp
from maas.train.optim import Schedule, build_optimizer, penalty
from maas.train.stop import StopOnSignal, TrainingStopped

log = logging.getLogger("maas.train")


@dataclass
class Position:
    """Where the run is: optimizer steps done, epoch, and micro-batches consumed in that epoch."""

    step: int = 0
    epoch: int = 0
    micro: int = 0


@dataclass
class Result:
    """What a finished run reports."""

    steps: int
    metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)


def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy; LM logits (B, T, V) against targets (B, T), or (B, C) against (B,)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))


def bf16_supported(device: torch.device) -> bool:
    """Whether this device computes in bf16 natively (emulated bf16 on older CPUs is slower)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast when asked (the Trainer falls back to fp32 where it is unsupported)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _Samples(torch.utils.data.Dataset[int]):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


@dataclass
class _Window:
    """What the training steps since the last log line add up to."""

    loss_sum: float = 0.0
    loss_n: int = 0
    seen: int = 0  # examples (or tokens)
    busy: float = 0.0  # seconds spent in training steps

    def reset(self) -> None:
        """Start the next window."""
        self.loss_sum, self.loss_n, self.seen, self.busy = 0.0, 0, 0, 0.0


class Trainer:
    """Trains `model` on `data.train` per `cfg`; evaluates on `data.val`; checkpoints to `out`."""

    def __init__(
        self,
        cfg: TrainConfig,
        data: Data,
        model: nn.Module,
        ctx: DistContext,
        out: Path,
        optimizer: Any = None,
        teacher: nn.Module | None = None,
    ):
        """`optimizer`: something with torch.optim's step/zero_grad/state_dict/param_groups (the
        parameter server's remote optimizer); by default the config's, on this process. `teacher`: a
        frozen model whose outputs the student is distilled from (cfg.distill)."""
        self.cfg, self.data, self.ctx, self.out = cfg, data, ctx, out
        self.teacher = teacher
        self.model = model.to(ctx.device)
        self.net = wrap_ddp(self.model, ctx, cfg)
        self.opt = optimizer if optimizer is not None else build_optimizer(self.model.parameters(), cfg.optim)
        t = cfg.train
        self.micro_batch = t.batch_size
        self.sampler: DistributedSampler[int] = DistributedSampler(
            _Samples(len(data.train)),
            num_replicas=ctx.world,
            rank=ctx.rank,
            shuffle=True,
            seed=cfg.seed,
            drop_last=True,
        )
        self.steps_per_epoch = (len(self.sampler) // t.batch_size) // t.grad_accum
        if self.steps_per_epoch < 1:
            raise MaasError(
                f"the training split has {len(data.train)} examples: too few for one step of "
                f"{t.batch_size} x {t.grad_accum} micro-batches on {ctx.world} process(es)"
            )
        self.total_steps = t.steps or max(1, math.ceil((t.epochs or 1) * self.steps_per_epoch))
        self.schedule = Schedule(cfg.schedule, cfg.optim.lr, self.total_steps)
        self.pos = Position()
        self.history: list[dict[str, Any]] = []
        self.last_val: tuple[int, dict[str, float]] = (-1, {})  # (step, metrics) of the last evaluation
        self.unit = "tokens" if data.task == "lm" else "samples"
        self.precision = t.precision
        if t.precision == "bf16" and not bf16_supported(ctx.device):
            if ctx.is_main:
                log.warning("train.precision bf16: %s has no native bf16; training in fp32", ctx.device)
            self.precision = "fp32"

    # -- checkpoints ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "schedule": self.schedule.state_dict(),
            "position": vars(self.pos).copy(),
            "rng": checkpoint.rng_state(),
            "history": self.history,
            "config": self.cfg.as_dict(),
            "world": self.ctx.world,
        }

    def restore(self, st: dict[str, Any]) -> None:
        """Load a checkpoint written by state()."""
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        self.schedule.load_state_dict(st["schedule"])
        self.pos = Position(**st["position"])
        self.history = list(st.get("history", []))
        checkpoint.set_rng_state(st["rng"])
        if st.get("world", 1) != self.ctx.world:
            log.warning(
                "checkpoint was written by %s process(es), resuming on %s: the data order changes",
                st.get("world"),
                self.ctx.world,
            )

    def resume(self) -> bool:
        """Continue from the run folder's checkpoint when there is one (says which step)."""
        st = checkpoint.load(self.out)
        if st is None:
            if self.ctx.is_main:
                log.info("no checkpoint in %s: starting from step 0", self.out)
            return False
        self.restore(st)
        if self.ctx.is_main:
            log.info("resuming from step %d (epoch %d)", self.pos.step, self.pos.epoch)
        return True

    def save(self) -> None:
        """Rank 0 writes the checkpoint; every rank waits for it."""
        if self.ctx.is_main:
            checkpoint.save(self.out, self.state())
        self.ctx.barrier()

    # -- evaluation ----------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, split: Split, prefix: str) -> dict[str, float]:
        """Mean loss and accuracy (classifiers) or perplexity (LMs), summed over every rank's shard."""
        if len(split) == 0:
            return {}
        sharded = self.ctx.initialized  # ranks of a process group split the rows and sum
        if not sharded and not self.ctx.is_main:
            return {}  # parameter-server workers: the first one evaluates everything
        self.model.eval()
        sums = torch.zeros(3, dtype=torch.float64)  # loss * count, correct, count
        bs = max(self.micro_batch, 64)
        idx = torch.arange(self.ctx.rank, len(split), self.ctx.world) if sharded else torch.arange(len(split))
        for i in range(0, len(idx), bs):
            j = idx[i : i + bs]
            x, y = split.x[j].to(self.ctx.device), split.y[j].to(self.ctx.device)
            with autocast(self.ctx.device, self.precision):
                logits = self.model(x)
            n = y.numel()
            sums[0] += float(loss_fn(logits, y)) * n
            sums[1] += float((logits.argmax(-1) == y).sum())
            sums[2] += n
        self.model.train()
        self.ctx.all_reduce_sum(sums)
        loss = float(sums[0] / sums[2])
        out = {f"{prefix}_loss": loss}
        if self.data.task == "lm":
            out[f"{prefix}_perplexity"] = math.exp(min(loss, 50.0))
        else:
            out[f"{prefix}_accuracy"] = float(sums[1] / sums[2])
        return out

    # -- the loop ------------------------------------------------------------------------------

    def _record(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if self.ctx.is_main:
            with (self.out / "metrics.jsonl").open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    def fit(self, final_eval: bool = True) -> Result:
        """Train to the last step (from wherever a restored checkpoint left off); with
        `final_eval`, the result carries final_metrics(). SIGINT / SIGTERM stop it after the step
        that runs, with a checkpoint (TrainingStopped), except on parameter-server workers."""
        from tqdm import tqdm

        t, ctx = self.cfg.train, self.ctx
        self.out.mkdir(parents=True, exist_ok=True)
        self.model.train()
        bar = tqdm(
            total=self.total_steps,
            initial=self.pos.step,
            desc=f"training {self.cfg.name}",
            unit="step",
            disable=None if ctx.is_main else True,
        )
        window = _Window()
        # Parameter-server workers cannot agree on a step to stop at (the servers wait for every worker's
        # gradients): a signal stops them as it would any process; --resume uses the last periodic checkpoint.
        with StopOnSignal(enabled=ctx.initialized or ctx.world == 1) as stop:
            while self.pos.step < self.total_steps:
                self.sampler.set_epoch(self.pos.epoch)
                order = torch.tensor(list(self.sampler), dtype=torch.long)
                micro_in_epoch = self.steps_per_epoch * t.grad_accum
                while self.pos.micro < micro_in_epoch and self.pos.step < self.total_steps:
                    t0 = time.perf_counter()
                    lr = self.schedule.apply(self.opt, self.pos.step)
                    self._step(order, window)
                    window.busy += time.perf_counter() - t0
                    self.pos.micro += t.grad_accum
                    self.pos.step += 1
                    epoch_done = self.pos.micro >= micro_in_epoch
                    if epoch_done:  # the position saved below already points at the next epoch
                        self.pos.epoch, self.pos.micro = self.pos.epoch + 1, 0
                    if not bar.disable:
                        bar.update(1)
                    self._after_step(window, lr, bar)
                    if self.pos.step < self.total_steps and stop.enabled and stop.requested(ctx):
                        bar.close()
                        raise self._stopped(stop.signum or 0)
                    if epoch_done:
                        break
        bar.close()
        if ctx.is_main:
            plot_curves(self.history, self.out / "loss.png", self.cfg.name)
        return Result(self.pos.step, self.final_metrics() if final_eval else {}, self.history)

    def _step(self, order: torch.Tensor, window: _Window) -> None:
        """One optimizer step over `grad_accum` micro-batches of the epoch's `order`."""
        cfg, t, ctx = self.cfg, self.cfg.train, self.ctx
        regularize = bool(cfg.optim.l1 or cfg.optim.l2)
        for a in range(t.grad_accum):
            m = self.pos.micro + a
            j = order[m * t.batch_size : (m + 1) * t.batch_size]
            x, y = self.data.train.x[j].to(ctx.device), self.data.train.y[j].to(ctx.device)
            with no_sync(self.net, a < t.grad_accum - 1), autocast(ctx.device, self.precision):
                logits = self.net(x)
                loss = loss_fn(logits, y)  # logged: the hard-label loss, as without a teacher
                total = loss
                if self.teacher is not None:
                    with torch.no_grad():
                        taught = self.teacher(x)
                    total = distill_loss(logits, taught, y, cfg.distill.temperature, cfg.distill.alpha)
                if regularize and (reg := penalty(self.model, cfg.optim)) is not None:
                    total = total + reg
                (total / t.grad_accum if t.grad_accum > 1 else total).backward()
            window.loss_sum += loss.item()
            window.loss_n += 1
            window.seen += y.numel()
        if t.clip_grad_norm:
            nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_grad_norm)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def _after_step(self, window: _Window, lr: float, bar: Any) -> None:
        """Log the window, evaluate and checkpoint when their intervals (or the last step) come."""
        t, ctx, step = self.cfg.train, self.ctx, self.pos.step
        last = step == self.total_steps
        if step % t.log_every == 0 or last:
            sums = ctx.all_reduce_sum(torch.tensor([window.loss_sum, window.loss_n], dtype=torch.float64))
            rate = window.seen * ctx.world / window.busy if window.busy > 0 else 0.0
            row = {
                "time": time.time(),
                "step": step,
                "epoch": self.pos.epoch,
                "train_loss": float(sums[0] / max(1.0, float(sums[1]))),
                "lr": lr,
                f"{self.unit}_per_s": rate,
            }
            self._record(row)
            bar.set_postfix(loss=f"{row['train_loss']:.4f}", lr=f"{lr:.2e}")
            if bar.disable and ctx.is_main:  # no progress bar (not a terminal): log lines
                log.info(
                    "step %d/%d loss %.4f lr %.2e %.0f %s/s",
                    step, self.total_steps, row["train_loss"], lr, rate, self.unit,
                )  # fmt: skip
            window.reset()
        if step % t.eval_every == 0 or last:
            ev = self.evaluate(self.data.val, "val")
            self.last_val = (step, ev)
            if ev:
                self._record({"step": step, **ev})
                if ctx.is_main:
                    log.info("step %d: %s", step, _fmt(ev))
                self.schedule.observe(ev["val_loss"])
        if step % t.checkpoint_every == 0 or last:
            self.save()

    def _stopped(self, signum: int) -> TrainingStopped:
        """Checkpoint this step (unless _after_step just did) and say where it is."""
        if self.pos.step % self.cfg.train.checkpoint_every:
            self.save()
        path = self.out / checkpoint.LAST
        if self.ctx.is_main:
            log.warning("stopped after step %d/%d; checkpoint written to %s (continue with --resume)",
                        self.pos.step, self.total_steps, path)  # fmt: skip
        return TrainingStopped(signum, self.pos.step, path)

    def final_metrics(self, reuse_val: bool = True) -> dict[str, float]:
        """Validation (the last step's evaluation when `reuse_val` and there was one) and test
        metrics, plus the unigram baseline for LMs."""
        step, val = self.last_val
        if step != self.pos.step or not reuse_val:
            val = self.evaluate(self.data.val, "val")
        same = self.data.test is self.data.val  # no test split of its own: not evaluated twice
        test = {k.replace("val_", "test_", 1): v for k, v in val.items()} if same else None
        metrics = {**val, **(test or self.evaluate(self.data.test, "test"))}
        if self.data.unigram_ppl is not None:
            metrics["unigram_perplexity"] = self.data.unigram_ppl
        if self.ctx.is_main:
            log.info("finished %d steps: %s", self.pos.step, _fmt(metrics))
        return metrics


def _fmt(d: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in d.items())


def plot_curves(history: list[dict[str, Any]], path: Path, title: str) -> None:
    """Training and validation loss against steps, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["train_loss"]) for r in history if "train_loss" in r]
    val = [(r["step"], r["val_loss"]) for r in history if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if val:
        ax.plot(*zip(*val, strict=True), marker="o", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
