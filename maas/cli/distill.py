"""`maas distill --teacher NAME --student CONFIG.yaml`: train a student on a teacher's softened outputs.

The method is compress/distill.py's; the training loop is maas.train's, wired in here (`train_student`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maas.cli.compress_args import add_method, method_formatter, report

if TYPE_CHECKING:
    from maas.compress.distill import DistillOptions
    from maas.store.registry import VersionInfo


def add_parser(sub: Any) -> None:
    """Register the verb."""
    p = sub.add_parser(
        "distill",
        help="train a small student model from a teacher's outputs (knowledge distillation)",
        formatter_class=method_formatter("distill"),
        description="Train the student a YAML file describes (as `maas train` would, alone or with --nproc N "
        "DDP processes) on alpha * T^2 * KL(teacher || student, both softened by temperature T) + "
        "(1 - alpha) * cross-entropy with the labels. For LMs the student reads text with the teacher's "
        "tokenizer. The result is registered with the teacher as its parent (operation distill).",
    )
    p.add_argument(
        "--teacher", required=True, metavar="NAME", help="a registered or built-in LM or maas classifier"
    )
    add_method(p, required=False, default="distill")
    p.add_argument(
        "--student", required=True, type=Path, metavar="CONFIG.yaml", help="the student's training YAML"
    )
    p.add_argument("--data", metavar="CORPUS", help="text data for an LM student (replaces data.train)")
    p.add_argument("--temperature", type=float, help="softening temperature T (default: the file's, else 2)")
    p.add_argument("--alpha", type=float, help="weight of the KL term (default: the file's, else 0.5)")
    p.add_argument("--name", metavar="NAME[:TAG]", help="register as (default: the file's name, tag latest)")
    p.add_argument("--nproc", type=int, default=None, help="data-parallel worker processes (default 1)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override the file (repeatable)"
    )
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--json", action="store_true", help="print the new version as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Distill through the table's method, the training loop wired in."""
    from maas.compress.methods import compress
    from maas.store.registry import parse_ref

    overrides = list(args.set)
    if args.name:
        name, tag = parse_ref(args.name)
        overrides += [f"name={name}", f"output.tag={tag}"]
    info = compress("distill", args.teacher, args.method, services={"trainer": train_student},
                    student=args.student, data=args.data, temperature=args.temperature, alpha=args.alpha,
                    nproc=args.nproc, overrides=tuple(overrides), resume=args.resume)  # fmt: skip
    args.model = args.teacher
    return report(info, "distill", args)


def train_student(teacher: str, options: DistillOptions) -> VersionInfo:
    """maas.train's loop (one process or DDP ranks) on the student's YAML with the teacher set; the run
    registers the student; its version."""
    from maas.cli import train
    from maas.errors import MaasError
    from maas.store.registry import Registry
    from maas.train.config import load_config

    overrides = [f"distill.teacher={teacher}"]
    if options.data:
        overrides.append(f"data.train={options.data}")
    if options.temperature is not None:
        overrides.append(f"distill.temperature={options.temperature}")
    if options.alpha is not None:
        overrides.append(f"distill.alpha={options.alpha}")
    overrides += options.overrides
    cfg = load_config(str(options.student), overrides)
    if cfg.data.kind == "text":
        overrides.append(f"data.tokenizer={teacher}")  # the student must read the teacher's tokens
    targs = argparse.Namespace(config=str(options.student), set=overrides, resume=options.resume,
                               no_register=False, nproc=options.nproc, strategy=None, num_servers=None,
                               mode=None, max_restarts=0, nnodes="1", rdzv_endpoint=None)  # fmt: skip
    if int(train.run(targs)) != 0:
        raise MaasError("the student's training failed (its errors are above)")
    return Registry().show(f"{cfg.name}:{cfg.output.tag}")
