"""`maas kernels build|list`: the native kernels, built once per install and only loaded at run time."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    """Register `maas kernels` and its verbs."""
    p = sub.add_parser(
        "kernels",
        help="build or list the native kernels (built once at install)",
        description="The C++ kernels are compiled at install (`make install` runs `maas kernels build`) into "
        "the install's directory (MAAS_KERNELS_DIR to move it), for the CPU builds this machine runs. "
        "`maas serve` only loads them: after a source change, run `maas kernels build` again.",
    )
    verbs = p.add_subparsers(dest="kernels_verb", metavar="VERB", required=True)
    b = verbs.add_parser(
        "build",
        help="compile the builds this CPU runs that are missing",
        description="Compile every build this CPU runs that is not built for the current sources "
        "(needs a C++ compiler and ninja; without them it says so and maas runs the torch reference).",
    )
    b.add_argument("--force", action="store_true", help="compile again even the builds that are present")
    ls = verbs.add_parser(
        "list", help="which builds exist and which run here", description="One row a build."
    )
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    for q in (b, ls):
        q.set_defaults(func=run)


def rows() -> list[dict[str, Any]]:
    """Each build of the table: its name, module, path, whether it is built, runs here and is in use."""
    from maas.kernels.native import BUILDS, first_loading

    used = {
        getattr(first_loading(kind, warn=False), "__name__", None) for kind in ("block_linear", "q8_linear")
    }
    return [
        {
            "name": b.name,
            "module": b.module,
            "path": str(b.path()),
            "built": b.path().exists(),
            "runs_here": b.runs_here(),
            "in_use": b.module in used,
        }
        for b in BUILDS.values()
    ]


def table_lines(table: list[dict[str, Any]]) -> list[str]:
    """One indented line a build: name, built or missing, whether it runs here, whether it is in use."""
    out = []
    for r in table:
        state = "built" if r["built"] else "missing"
        where = "runs here" if r["runs_here"] else "not for this CPU"
        out.append(f"  {r['name']:<26} {state:<8} {where:<17} {'in use' if r['in_use'] else ''}".rstrip())
    return out


def run(args: argparse.Namespace) -> int:
    """Dispatch a `maas kernels` verb."""
    from maas.kernels.build import build_all
    from maas.kernels.native import kernels_dir

    if args.kernels_verb == "list":
        table = rows()
        if args.json:
            print(json.dumps({"dir": str(kernels_dir()), "builds": table}, indent=2))
            return 0
        print("\n".join([f"kernels in {kernels_dir()}", *table_lines(table)]))
        return 0
    outcomes = build_all(force=args.force, say=lambda s: print(s, file=sys.stderr, flush=True))
    for o in outcomes:
        extra = f" in {o.seconds:.0f} s" if o.state in ("built", "failed") else ""
        print(f"{o.build.name}: {o.state}{extra}{': ' + o.detail if o.detail and o.state != 'built' else ''}")
    return 1 if any(o.state == "failed" for o in outcomes) else 0
