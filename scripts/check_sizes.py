#!/usr/bin/env python3
"""Fail when a module of the package is over 400 lines or a function over 80 (DESIGN.md's house rules).

    python scripts/check_sizes.py [PACKAGE_DIR]   (default: maas)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def problems(pkg: Path) -> list[str]:
    """One line per module or function over its limit."""
    out = []
    for path in sorted(pkg.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        n = len(text.splitlines())
        if n > MAX_MODULE_LINES:
            out.append(f"{path}: {n} lines (at most {MAX_MODULE_LINES}): split it by what it owns")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                length = (node.end_lineno or node.lineno) - first + 1
                if length > MAX_FUNCTION_LINES:
                    out.append(
                        f"{path}:{node.lineno}: {node.name} is {length} lines (at most {MAX_FUNCTION_LINES})"
                    )
    return out


def main() -> int:
    found = problems(Path(sys.argv[1] if len(sys.argv) > 1 else "maas"))
    print("\n".join(found))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
