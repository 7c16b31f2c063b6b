"""What every model's child process shares: start it and wait until it has loaded (or failed),
its side of loading, and its resident memory.

A child ignores SIGINT and SIGTERM: a supervisor that signals the whole process group (systemd's
KillMode=control-group, `tini -g`, Ctrl-C) must not stop an engine while the server drains. A child
stops when its parent says so, when the parent's end of its pipe closes, or when the parent is gone.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing as mp
import signal
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

from maas.errors import EngineDeadError, MaasError, ModelFormatError

T = TypeVar("T")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def spawn_and_wait(
    target: Callable[..., None],
    args: tuple[Any, ...],
    name: str,
    reader: Any,
    child_ends: list[Any],
    load_timeout: float,
    what: str,
) -> tuple[BaseProcess, Any]:
    """Start `target(*args)` in a spawned process (closing our copies of `child_ends`), wait for its
    first message on `reader` and return (process, info of its ("ready", info)). A load that
    fails is a ModelFormatError; one that hangs or dies, an EngineDeadError naming `what`."""
    proc = mp.get_context("spawn").Process(target=target, args=args, name=name, daemon=True)
    # Blocked in this thread while the child starts: it inherits the mask, so no stop signal reaches
    # it before ignore_stop_signals() runs there (the same trick as multiprocessing's resource tracker).
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        proc.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    for c in child_ends:
        c.close()
    try:
        ready = reader.poll(load_timeout)
    except BaseException:  # interrupted (a stop signal while it loads): the child must not outlive us
        proc.kill()
        raise
    if not ready:
        proc.kill()
        raise EngineDeadError(f"the {what} process did not finish loading the model in time")
    try:
        kind, info = reader.recv()
    except (EOFError, OSError):
        raise EngineDeadError(f"the {what} process died while loading (exit code {proc.exitcode})") from None
    if kind == "failed":
        proc.join(5)
        raise ModelFormatError(info)
    return proc, info


def ignore_stop_signals() -> None:
    """In a child: SIGINT and SIGTERM are ignored from now on (those held back at its start are dropped)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def load_in_child(build: Callable[[], T], conn: Any, log_level: int) -> T | None:
    """`build()` in a fresh child (which ignores stop signals from now on); on failure send
    ("failed", message) down `conn` and return None."""
    ignore_stop_signals()
    logging.basicConfig(
        level=log_level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    try:
        built = build()
        gc.freeze()  # the model's objects leave the collector's scans: no full scan of them in the middle of a step
        return built
    except MaasError as e:
        conn.send(("failed", e.message))
    except Exception as e:  # a bug while loading: report it rather than hang the parent
        conn.send(("failed", f"{type(e).__name__}: {e}"))
    return None


def resident_bytes(proc: BaseProcess) -> int | None:
    """Resident memory of a child process (None once it has exited)."""
    import psutil

    try:
        return int(psutil.Process(proc.pid).memory_info().rss)
    except (psutil.Error, ValueError, TypeError):
        return None
