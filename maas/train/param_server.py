"""Parameter-server training over torch.distributed.rpc.

Of the N + S processes torchrun starts, ranks 0..N-1 are workers and N..N+S-1 are parameter
servers. The model's parameters are sharded across the servers (balanced by size); each server
holds its shard and the optimizer state for it. Every step a worker computes gradients on its
own batch, pushes each shard's gradients to its server and gets the updated values back.

- sync: a server waits for all N workers' gradients of a step, averages them and steps once:
  the same update as data-parallel SGD with N times the batch.
- async: a server applies each worker's gradient as it arrives. Bounded staleness (stale
  synchronous parallel): a worker more than `staleness` steps ahead of the slowest one waits.

Worker 0 evaluates, checkpoints (gathering the servers' optimizer state) and registers.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import torch
import torch.distributed.rpc as rpc
from torch import nn
from torch.futures import Future

from maas.engine.device import pick_device
from maas.errors import MaasError
from maas.train import checkpoint
from maas.train.config import TrainConfig
from maas.train.data import Data
from maas.train.distributed import DistContext
from maas.train.optim import build_optimizer
from maas.train.trainer import Result, Trainer

log = logging.getLogger("maas.train")

_SHARD: Shard | None = None  # the shard this server process holds


def plan(model: nn.Module, num_servers: int) -> list[list[str]]:
    """Parameter names per server: largest first onto the least loaded server."""
    loads = [0] * num_servers
    out: list[list[str]] = [[] for _ in range(num_servers)]
    for name, p in sorted(model.named_parameters(), key=lambda kv: -kv[1].numel()):
        s = loads.index(min(loads))
        out[s].append(name)
        loads[s] += p.numel()
    return out


class Shard:
    """One server's parameters, optimizer and update rule."""

    def __init__(self, params: dict[str, torch.Tensor], cfg: TrainConfig, workers: int):
        self.names = list(params)
        self.params = [params[n].detach().clone().requires_grad_(True) for n in self.names]
        self.opt = build_optimizer(self.params, cfg.optim)
        self.workers = workers
        self.sync = cfg.distributed.mode == "sync"
        self.staleness = cfg.distributed.staleness
        self.lock = threading.Lock()
        self.arrived: dict[int, tuple[list[torch.Tensor], list[Future[list[torch.Tensor]]]]] = {}
        self.clocks = [0] * workers  # pushes per worker
        self.parked: list[tuple[int, Future[list[torch.Tensor]]]] = []
        self.updates = 0

    def values(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params]

    def _apply(self, grads: list[torch.Tensor], lr: float) -> None:
        for p, g in zip(self.params, grads, strict=True):
            p.grad = g
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.updates += 1

    def push(
        self, worker: int, step: int, grads: list[torch.Tensor], lr: float
    ) -> Future[list[torch.Tensor]]:
        """Take one worker's gradients; the future resolves to the new parameter values."""
        fut: Future[list[torch.Tensor]] = Future()
        with self.lock:
            self.clocks[worker] += 1
            if self.sync:
                acc, waiting = self.arrived.setdefault(step, ([torch.zeros_like(g) for g in grads], []))
                for a, g in zip(acc, grads, strict=True):
                    a.add_(g)
                waiting.append(fut)
                if len(waiting) < self.workers:
                    return fut
                del self.arrived[step]
                self._apply([a / self.workers for a in acc], lr)
                vals = self.values()
                for f in waiting:
                    f.set_result(vals)
                return fut
            self._apply(grads, lr)
            self.parked.append((worker, fut))
            slowest = min(self.clocks)
            ready = [(w, f) for w, f in self.parked if self.clocks[w] - slowest <= self.staleness]
            self.parked = [(w, f) for w, f in self.parked if self.clocks[w] - slowest > self.staleness]
            vals = self.values() if ready else []
        for _, f in ready:
            f.set_result(vals)
        return fut

    def state(self) -> dict[str, Any]:
        """Parameters and optimizer state (for worker 0's checkpoint)."""
        with self.lock:
            return {"names": self.names, "values": self.values(), "optimizer": self.opt.state_dict()}


# -- functions the workers call on a server (module level: RPC pickles them by name) ---------------


@rpc.functions.async_execution
def _push(worker: int, step: int, grads: list[torch.Tensor], lr: float) -> Future[list[torch.Tensor]]:
    assert _SHARD is not None
    return _SHARD.push(worker, step, grads, lr)


def _pull() -> list[torch.Tensor]:
    assert _SHARD is not None
    with _SHARD.lock:
        return _SHARD.values()


def _state() -> dict[str, Any]:
    assert _SHARD is not None
    return _SHARD.state()


class RemoteOptimizer:
    """What a worker's Trainer steps: pushes gradients to the servers and loads the new values."""

    def __init__(self, model: nn.Module, shards: list[list[str]], worker: int, num_workers: int, lr: float):
        self.params = dict(model.named_parameters())
        self.shards = shards
        self.worker = worker
        self.step_no = 0
        self.param_groups: list[dict[str, Any]] = [{"lr": lr}]  # the schedule writes the lr here
        self.servers = [f"ps{s}" for s in range(len(shards))]

    def _load(self, s: int, values: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for name, v in zip(self.shards[s], values, strict=True):
                self.params[name].copy_(v)

    def pull(self) -> None:
        """Fetch every shard's current values."""
        futs = [rpc.rpc_async(srv, _pull) for srv in self.servers]
        for s, f in enumerate(futs):
            self._load(s, f.wait())

    def step(self) -> None:
        lr = float(self.param_groups[0]["lr"])
        futs = []
        for srv, names in zip(self.servers, self.shards, strict=True):
            grads = [
                g.detach().cpu()
                if (g := self.params[n].grad) is not None
                else torch.zeros_like(self.params[n])
                for n in names
            ]
            futs.append(rpc.rpc_async(srv, _push, args=(self.worker, self.step_no, grads, lr)))
        for s, f in enumerate(futs):
            self._load(s, f.wait())
        self.step_no += 1

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params.values():
            p.grad = None

    def state_dict(self) -> dict[str, Any]:
        """The servers' shards (parameters and optimizer state) and this worker's step count."""
        futs = [rpc.rpc_async(srv, _state) for srv in self.servers]
        return {"shards": [f.wait() for f in futs], "step": self.step_no}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        """Servers restore their own shards at start-up; the worker only needs its step count."""
        self.step_no = int(st.get("step", 0))


def _options() -> rpc.TensorPipeRpcBackendOptions:
    return rpc.TensorPipeRpcBackendOptions(num_worker_threads=32, rpc_timeout=600)


def run_parameter_server(cfg: TrainConfig, data: Data, model: nn.Module, resume: bool) -> Result | None:
    """Run this process's part (server or worker); worker 0 returns the Result, others None."""
    global _SHARD
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    servers = cfg.distributed.num_servers
    workers = world - servers
    if workers < 1:
        raise MaasError(f"the parameter server needs workers: {world} processes, {servers} servers")
    shards = plan(model, servers)
    out = cfg.out_dir()
    if rank >= workers:  # a server
        s = rank - workers
        params = dict(model.named_parameters())
        _SHARD = Shard({n: params[n] for n in shards[s]}, cfg, workers)
        st = checkpoint.load(out) if resume else None
        if st is not None:
            mine = st["optimizer"]["shards"][s]
            with torch.no_grad():
                for p, v in zip(_SHARD.params, mine["values"], strict=True):
                    p.copy_(v)
            _SHARD.opt.load_state_dict(mine["optimizer"])
        rpc.init_rpc(f"ps{s}", rank=rank, world_size=world, rpc_backend_options=_options())
        log.info("parameter server %d holds %d tensors", s, len(shards[s]))
        rpc.shutdown()  # waits until every worker is done
        return None
    rpc.init_rpc(f"worker{rank}", rank=rank, world_size=world, rpc_backend_options=_options())
    try:
        ctx = DistContext(rank=rank, world=workers, device=pick_device(cfg.train.device, 0))
        opt = RemoteOptimizer(model, shards, rank, workers, cfg.optim.lr)
        trainer = Trainer(cfg, data, model, ctx, out, optimizer=opt)
        if resume:
            trainer.resume()
        opt.pull()  # start from the servers' values (fresh or restored)
        if ctx.is_main:
            log.info(
                "parameter server: %d workers, %d servers (%s%s)",
                workers,
                servers,
                cfg.distributed.mode,
                f", staleness {cfg.distributed.staleness}" if cfg.distributed.mode == "async" else "",
            )
        result = trainer.fit(final_eval=False)
        if not ctx.is_main:
            return None
        asynchronous = cfg.distributed.mode == "async"
        if asynchronous:
            opt.pull()  # the final values, after every worker's last update
        result.metrics = trainer.final_metrics(reuse_val=not asynchronous)
        return result
    finally:
        rpc.shutdown()
