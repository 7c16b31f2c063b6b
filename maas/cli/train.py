"""`maas train CONFIG`: train from a YAML file on one process, N processes (DDP), or a
parameter server; the result is registered and servable."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    """Register the verb."""
    p = sub.add_parser(
        "train",
        help="train a model from a YAML file",
        description="Train the model a YAML file describes (see configs/). Alone by default; "
        "--nproc N runs N data-parallel processes through torchrun's elastic launcher; "
        "--strategy ps uses a parameter server. The trained model is exported to the run folder "
        "(runs/NAME unless output.dir says otherwise) and registered as NAME:latest.",
    )
    from maas.train.__main__ import add_run_arguments

    add_run_arguments(p)
    p.add_argument("--nproc", type=int, default=1, help="worker processes on this machine (default 1)")
    p.add_argument(
        "--strategy", choices=["ddp", "ps"], help="data-parallel all-reduce (ddp) or parameter server (ps)"
    )
    p.add_argument("--num-servers", type=int, help="parameter-server processes (with --strategy ps)")
    p.add_argument("--mode", choices=["sync", "async"], help="parameter-server update mode")
    p.add_argument(
        "--max-restarts", type=int, default=0, help="restart failed workers this often, resuming (torchrun)"
    )
    p.add_argument(
        "--nnodes", default="1", help="machines in the job, N or MIN:MAX (with --rdzv-endpoint; default 1)"
    )
    p.add_argument(
        "--rdzv-endpoint", metavar="HOST:PORT", help="join a multi-machine rendezvous instead of --standalone"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the file, then train here or launch the ranks. SIGINT / SIGTERM stop the run after its
    step with a checkpoint: exit 130 / 143 and the command that continues it."""
    from maas.errors import MaasError
    from maas.train.config import load_config
    from maas.train.stop import TrainingStopped

    overrides = list(args.set)
    if args.strategy:
        overrides.append(f"distributed.strategy={args.strategy}")
    if args.num_servers is not None:
        overrides.append(f"distributed.num_servers={args.num_servers}")
    if args.mode:
        overrides.append(f"distributed.mode={args.mode}")
    cfg = load_config(args.config, overrides)  # errors in the file show before any process starts
    if cfg.model.base is not None or cfg.data.tokenizer != "bpe":
        from maas.store.builtin import ensure_builtins_imported

        ensure_builtins_imported()  # a built-in base model is linked as the parent in the registry
    if args.nproc < 1:
        raise MaasError("--nproc must be at least 1")
    nproc = args.nproc
    if cfg.distributed.strategy == "ps":
        nproc += cfg.distributed.num_servers  # workers + parameter servers
    argv = [args.config, *(a for o in overrides for a in ("--set", o))]
    if args.resume:
        argv.append("--resume")
    if args.no_register:
        argv.append("--no-register")
    if args.nnodes != "1" and not args.rdzv_endpoint:
        raise MaasError("--nnodes needs --rdzv-endpoint HOST:PORT (where the machines meet)")
    again = f"maas train {args.config} --resume" + "".join(f" --set {o}" for o in args.set)
    if nproc == 1 and not args.rdzv_endpoint and args.max_restarts == 0:
        from maas.train.run import run as train

        try:
            train(cfg, resume=args.resume, register=not args.no_register)
        except TrainingStopped as e:
            print(f"maas train: {e}; continue with: {again}", file=sys.stderr)
            return e.exit_code
        return 0
    from maas.train.distributed import launch

    code = launch(argv, nproc, args.max_restarts, args.rdzv_endpoint, args.nnodes)
    if code:  # stopped by a signal: the ranks checkpointed (see the log above)
        print(f"maas train: stopped; continue with: {again} --nproc {args.nproc}", file=sys.stderr)
    return code
