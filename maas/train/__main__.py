"""`python -m maas.train CONFIG`: the per-rank entry point (what torchrun runs).

torchrun --nnodes 2 --nproc-per-node 8 --rdzv-endpoint HOST:29400 -m maas.train CONFIG
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from maas.errors import MaasError


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """CONFIG, --resume, --set, --no-register (shared with `maas train`)."""
    p.add_argument("config", metavar="CONFIG", help="training YAML file (see configs/)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a value of the file, e.g. --set train.steps=100 (repeatable)",
    )
    p.add_argument("--no-register", action="store_true", help="do not import the result into the registry")


def parser() -> argparse.ArgumentParser:
    """Arguments of one rank."""
    p = argparse.ArgumentParser(
        prog="python -m maas.train", description="Train a model from a YAML file (one rank of a job)."
    )
    add_run_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one rank; user errors print one line (with the rank) and exit 2; a stop signal checkpoints
    and exits 128 + the signal (130 for SIGINT, 143 for SIGTERM)."""
    args = parser().parse_args(argv)
    rank = os.environ.get("RANK")
    logging.basicConfig(
        level=os.environ.get("MAAS_LOG_LEVEL", "INFO").upper(),
        format=f"%(asctime)s %(levelname)-7s {'rank ' + rank + ' ' if rank else ''}%(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from maas.train.config import load_config
    from maas.train.run import run
    from maas.train.stop import TrainingStopped

    try:
        cfg = load_config(args.config, args.set)
        run(cfg, resume=args.resume, register=not args.no_register)
    except MaasError as e:
        print(f"maas train: error{' (rank ' + rank + ')' if rank else ''}: {e.message}", file=sys.stderr)
        return 2
    except TrainingStopped as e:
        if not rank or rank == "0":
            print(f"maas train: {e}; continue with --resume", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
