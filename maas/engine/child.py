"""What every model's child process does first: set up logging and load, reporting a failure."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from maas.errors import MaasError

T = TypeVar("T")


def load_in_child(build: Callable[[], T], conn: Any, log_level: int) -> T | None:
    """`build()` in a fresh child; on failure send ("failed", message) down `conn` and return None."""
    logging.basicConfig(
        level=log_level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    try:
        return build()
    except MaasError as e:
        conn.send(("failed", e.message))
    except Exception as e:  # a bug while loading: report it rather than hang the parent
        conn.send(("failed", f"{type(e).__name__}: {e}"))
    return None
