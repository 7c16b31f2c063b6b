"""Options and output shared by the commands that write a compressed version (quantize, prune)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_common(p: argparse.ArgumentParser, calibration_help: str, tokens: int, tag: str) -> None:
    """--calibration, --calibration-tokens, --name, --json."""
    p.add_argument("--calibration", metavar="FILE", help=calibration_help)
    p.add_argument("--calibration-tokens", type=int, default=tokens, metavar="N",
                   help="tokens of it to run (default %(default)s)")  # fmt: skip
    p.add_argument("--name", default=None, metavar="NAME[:TAG]", help=f"default: MODEL's name, tag {tag}")
    p.add_argument("--json", action="store_true", help="print the new version as JSON")


def check_common(args: argparse.Namespace) -> None:
    """Refuse settings that cannot work before any model is read."""
    from maas.errors import InvalidRequestError

    if args.calibration_tokens < 1:
        raise InvalidRequestError("--calibration-tokens must be at least 1")


def report(info: Any, verb: str, args: argparse.Namespace) -> int:
    """Print the new version (JSON with --json, else one line: ref, size, parent, parameters)."""
    if args.json:
        print(json.dumps(info.as_dict(), indent=2))
    else:
        print(f"{info.name}:{info.tag} (version {info.version}, {info.size / 2**20:.1f} MiB) <- "
              f"{info.parent or args.model} by {verb} {json.dumps(info.parameters)}")  # fmt: skip
    return 0
