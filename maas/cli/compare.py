"""`maas compare MODEL...`: versions side by side (size, parameters, quality, speed, memory)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    """Register the verb."""
    p = sub.add_parser(
        "compare",
        help="compare model versions: size, parameters, quality, speed, peak memory (table, JSON, PNG)",
        description="One row per model: size on disk, parameters (total and non-zero), the quality "
        "`maas eval` recorded, decode tokens/s at 1 and 16 streams (LMs) or sentences/examples per second "
        "(encoders, classifiers), and peak RSS, each model measured in its own process. Models must be of "
        "one kind.",
    )
    p.add_argument("models", nargs="+", metavar="MODEL", help="registry name[:tag]s, built-in names or paths")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    p.add_argument("--chart", metavar="FILE.png", help="also draw quality against size into this PNG")
    p.add_argument("--streams", default="1,16", help="concurrency levels to measure (default %(default)s)")
    p.add_argument("--tokens", type=int, default=32, help="tokens decoded per stream (default %(default)s)")
    p.add_argument("--no-speed", action="store_true", help="skip the speed and memory runs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Measure, print, chart."""
    from maas.compress.compare import as_json, chart, compare, table
    from maas.errors import InvalidRequestError

    try:
        streams = [int(s) for s in args.streams.split(",")]
    except ValueError:
        raise InvalidRequestError(
            f"--streams takes numbers separated by commas, got {args.streams!r}"
        ) from None
    if any(s < 1 or s > 256 for s in streams) or args.tokens < 2:
        raise InvalidRequestError("--streams must lie in 1..256 and --tokens be at least 2")
    rows = compare(args.models, streams, args.tokens, speed=not args.no_speed)
    print(as_json(rows) if args.json else table(rows))
    if args.chart:
        print(f"chart: {chart(rows, args.chart)}")
    return 0
