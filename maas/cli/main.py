"""`maas` entry point: parse the verb, set up logging, turn user errors into one-line messages."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from maas import __version__
from maas.config import get_settings
from maas.errors import MaasError


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every verb has --help)."""
    from maas.cli import (
        bench,
        compare,
        data,
        distill,
        embed,
        eval,
        export,
        info,
        kernels,
        models,
        predict,
        prune,
        quantize,
        run,
        serve,
        train,
    )

    p = argparse.ArgumentParser(
        prog="maas",
        description="maas: model as a service. Serve, train, compress, store and measure models.",
    )
    p.add_argument("--version", action="version", version=f"maas {__version__}")
    p.add_argument(
        "--log-level", default=get_settings().log_level, help="debug, info, warning (MAAS_LOG_LEVEL)"
    )
    sub = p.add_subparsers(dest="verb", metavar="VERB")
    serve.add_parser(sub)
    run.add_parser(sub)
    embed.add_parser(sub)
    predict.add_parser(sub)
    train.add_parser(sub)
    export.add_parser(sub)
    eval.add_parser(sub)
    quantize.add_parser(sub)
    prune.add_parser(sub)
    compare.add_parser(sub)
    distill.add_parser(sub)
    data.add_parser(sub)
    models.add_parser(sub)
    bench.add_parser(sub)
    kernels.add_parser(sub)
    info.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the `maas` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _setup_logging(args.log_level)
    try:
        return int(args.func(args) or 0)
    except MaasError as e:
        print(f"maas: error: {e.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`maas models list | head`): stop quietly
        _quiet_stdout()
        return 141


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
