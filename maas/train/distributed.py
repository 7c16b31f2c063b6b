"""Process groups for data-parallel training, and launching through torchrun's elastic agent.

One process: no process group at all. Several (launched by `maas train --nproc N`, which calls
torch.distributed.run — torchrun — in-process, or by `torchrun ... -m maas.train` directly):
rank, world size and rendezvous come from torchrun's environment variables; gloo on CPU, nccl on
GPU. DDP wraps the model; an optional communication hook compresses gradients (fp16, PowerSGD).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from maas.engine.device import pick_device
from maas.errors import MaasError
from maas.train.config import TrainConfig

log = logging.getLogger("maas.train")


@dataclass
class DistContext:
    """Where this process stands: rank, world size, device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    device: torch.device = torch.device("cpu")
    initialized: bool = False  # a default process group exists

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, checkpoints and registers."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op alone)."""
        if self.initialized:
            dist.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum a tensor over ranks, in place (no-op alone)."""
        if self.initialized:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's object on every rank."""
        if not self.initialized:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def shutdown(self) -> None:
        """Tear the process group down."""
        if self.initialized and dist.is_initialized():
            dist.destroy_process_group()
            self.initialized = False


def init_from_env(cfg: TrainConfig, with_group: bool = True) -> DistContext:
    """A DistContext from torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, ...); a process
    group when there is more than one rank and `with_group`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    device = pick_device(cfg.train.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if local_world > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    ctx = DistContext(rank, world, local_rank, local_world, device)
    if world > 1 and with_group:
        backend = cfg.distributed.backend
        if backend == "auto":
            backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = datetime.timedelta(minutes=10)
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            # Under torchrun: the agent's store outlives a restart, and keys left by the failed
            # attempt (peers' old addresses) make the new gloo mesh connect to dead ports. Each
            # attempt gets its own key prefix.
            store = dist.TCPStore(
                os.environ["MASTER_ADDR"],
                int(os.environ["MASTER_PORT"]),
                world,
                is_master=False,
                timeout=timeout,
            )
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            prefixed = dist.PrefixStore(
                f"maas/{os.environ.get('TORCHELASTIC_RUN_ID', '')}/attempt-{attempt}", store
            )
            dist.init_process_group(backend, store=prefixed, rank=rank, world_size=world, timeout=timeout)
        else:
            dist.init_process_group(backend, timeout=timeout)
        ctx.initialized = True
    return ctx


def wrap_ddp(model: nn.Module, ctx: DistContext, cfg: TrainConfig) -> nn.Module:
    """DDP around `model` (when distributed), with the configured gradient compression hook."""
    if not ctx.initialized:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    ddp = DDP(model, device_ids=ids)
    comp = cfg.distributed.compression
    if comp == "fp16":
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
    elif comp == "powersgd":
        from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd

        state = psgd.PowerSGDState(
            process_group=None,
            matrix_approximation_rank=cfg.distributed.powersgd_rank,
            start_powerSGD_iter=2,
            use_error_feedback=True,
        )
        ddp.register_comm_hook(state, psgd.powerSGD_hook)
    return ddp


def no_sync(model: nn.Module, skip: bool) -> contextlib.AbstractContextManager[Any]:
    """DDP's no_sync() when `skip` (accumulating micro-batches), else nothing."""
    if skip and hasattr(model, "no_sync"):
        return model.no_sync()  # type: ignore[no-any-return,operator]
    return contextlib.nullcontext()


def launch(
    argv: list[str], nproc: int, max_restarts: int = 0, rdzv_endpoint: str | None = None, nnodes: str = "1"
) -> int:
    """Run `python -m maas.train ARGV` on `nproc` processes of this machine through torchrun's
    elastic launcher (restarts, rendezvous, per-rank environment); returns an exit code. With
    `rdzv_endpoint`, this machine is one of `nnodes` meeting there. A SIGINT / SIGTERM here is forwarded
    to every rank (each checkpoints after its step, see train/stop.py; the launcher kills ranks still
    running after its shutdown timeout, TORCH_ELASTIC_SHUTDOWN_TIMEOUT, 30 s): 128 + the signal."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = ["--nproc-per-node", str(nproc), "--max-restarts", str(max_restarts)]
    if rdzv_endpoint:
        args += ["--nnodes", nnodes, "--rdzv-backend", "c10d", "--rdzv-endpoint", rdzv_endpoint]
    else:
        args += ["--standalone"]
    args += ["--module", "maas.train", *argv]
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    try:
        run(get_args_parser().parse_args(args))
    except ChildFailedError as e:
        failures = "; ".join(f"rank {r}: exit {f.exitcode}" for r, f in sorted(e.failures.items()))
        raise MaasError(f"training failed ({failures}); see the log above") from None
    except SignalException as e:
        log.warning("%s: the ranks were told to stop", e.sigval.name)
        return 128 + int(e.sigval)
    return 0
