"""`maas distill --teacher NAME --student CONFIG.yaml`: train a student on a teacher's softened outputs."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    """Register the verb."""
    p = sub.add_parser(
        "distill",
        help="train a small student model from a teacher's outputs (knowledge distillation)",
        description="Train the student a YAML file describes (as `maas train` would, alone or with --nproc N "
        "DDP processes) on alpha * T^2 * KL(teacher || student, both softened by temperature T) + "
        "(1 - alpha) * cross-entropy with the labels. For LMs the student reads text with the teacher's "
        "tokenizer. The result is registered with the teacher as its parent (operation distill).",
    )
    p.add_argument(
        "--teacher", required=True, metavar="NAME", help="a registered or built-in LM or maas classifier"
    )
    p.add_argument("--student", required=True, metavar="CONFIG.yaml", help="the student's training YAML")
    p.add_argument("--data", metavar="CORPUS", help="text data for an LM student (replaces data.train)")
    p.add_argument("--temperature", type=float, help="softening temperature T (default: the file's, else 2)")
    p.add_argument("--alpha", type=float, help="weight of the KL term (default: the file's, else 0.5)")
    p.add_argument("--name", metavar="NAME[:TAG]", help="register as (default: the file's name, tag latest)")
    p.add_argument("--nproc", type=int, default=1, help="data-parallel worker processes (default 1)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override the file (repeatable)"
    )
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Turn the options into training overrides and train."""
    from maas.cli import train
    from maas.store.registry import parse_ref
    from maas.train.config import load_config

    overrides = [f"distill.teacher={args.teacher}"]
    if args.data:
        overrides.append(f"data.train={args.data}")
    if args.temperature is not None:
        overrides.append(f"distill.temperature={args.temperature}")
    if args.alpha is not None:
        overrides.append(f"distill.alpha={args.alpha}")
    if args.name:
        name, tag = parse_ref(args.name)
        overrides += [f"name={name}", f"output.tag={tag}"]
    overrides += args.set
    if load_config(args.student, overrides).data.kind == "text":
        overrides.append(f"data.tokenizer={args.teacher}")  # the student must read the teacher's tokens
    targs = argparse.Namespace(config=args.student, set=overrides, resume=args.resume, no_register=False,
                               nproc=args.nproc, strategy=None, num_servers=None, mode=None, max_restarts=0,
                               nnodes="1", rdzv_endpoint=None)  # fmt: skip
    return int(train.run(targs))
