"""Options and output shared by the commands that write a compressed version (quantize, prune, distill),
and the training data loader they and `maas eval` hand to compress/ (which never imports training)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maas.compress.calibration import TrainedData, TrainingRecord
    from maas.compress.method import Verb
    from maas.store.registry import VersionInfo


def method_formatter(verb: Verb) -> type[argparse.HelpFormatter]:
    """A help formatter that lists `verb`'s methods from the table under --method (read only when help is
    printed, so that starting `maas` does not import the methods)."""

    class Formatter(argparse.HelpFormatter):
        def _get_help_string(self, action: argparse.Action) -> str | None:
            text = action.help
            if "--method" in action.option_strings:
                from maas.compress.methods import METHODS

                rows = [m for m in METHODS if m.verb == verb]
                text = f"{text}: " + "; ".join(f"{m.name} ({'/'.join(m.kinds)}): {m.about}" for m in rows)
            return text

    return Formatter


def add_method(p: argparse.ArgumentParser, required: bool, default: str | None = None) -> None:
    """--method METHOD (checked against the table of methods, with the model's kind)."""
    p.add_argument("--method", metavar="METHOD", required=required, default=default, help="the method")


def add_common(p: argparse.ArgumentParser, calibration_help: str, tag: str) -> None:
    """--calibration, --calibration-tokens, --name, --json."""
    p.add_argument("--calibration", type=Path, metavar="FILE", help=calibration_help)
    p.add_argument("--calibration-tokens", type=int, default=None, metavar="N",
                   help="tokens of it to run (default: the method's)")  # fmt: skip
    p.add_argument("--name", default=None, metavar="NAME[:TAG]", help=f"default: MODEL's name, tag {tag}")
    p.add_argument("--json", action="store_true", help="print the new version as JSON")


def report(info: VersionInfo, verb: str, args: argparse.Namespace) -> int:
    """Print the new version (JSON with --json, else one line: ref, size, parent, parameters)."""
    if args.json:
        print(json.dumps(info.as_dict(), indent=2))
    else:
        print(f"{info.name}:{info.tag} (version {info.version}, {info.size / 2**20:.1f} MiB) <- "
              f"{info.parent or args.model} by {verb} {json.dumps(info.parameters)}")  # fmt: skip
    return 0


def load_trained(record: TrainingRecord) -> TrainedData:
    """The data a recorded training config names, rebuilt by the training room's loader."""
    import yaml

    from maas.train.config import parse_config
    from maas.train.data import load_data

    data: Any = load_data(parse_config(yaml.safe_dump(record.config), record.base_dir))
    return data  # maas.train.data.Data has TrainedData's shape


def calibration_rows(ref: str) -> Any:
    """Rows of the training split `ref`'s lineage records, as served (compress/calibration.py), or None."""
    from maas.compress.calibration import calibration_rows as rows

    return rows(ref, load_trained)
