"""Stopping a run on SIGINT / SIGTERM: note the signal, finish the step, checkpoint, exit 128 + signal.

The trainer asks `StopOnSignal.requested(ctx)` at every step boundary; ranks of a process group agree
(a one-element all-reduce), so that they all checkpoint after the same step. Under torchrun the launcher
forwards its signal to every rank (each in its own session) and kills them after its shutdown timeout;
alone, a second signal stops at once (KeyboardInterrupt for SIGINT, the signal's default for SIGTERM).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import torch

from maas.train.distributed import DistContext

log = logging.getLogger("maas.train")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingStopped(Exception):
    """The run stopped on a signal after writing its checkpoint (exit status 128 + the signal)."""

    def __init__(self, signum: int, step: int, checkpoint: Path):
        super().__init__(
            f"stopped by {signal.Signals(signum).name} after step {step}; checkpoint {checkpoint}"
        )
        self.signum, self.step, self.checkpoint = signum, step, checkpoint

    @property
    def exit_code(self) -> int:
        """130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


class StopOnSignal:
    """While entered (in the main thread, when `enabled`), SIGINT and SIGTERM ask the run to stop at its
    next step boundary instead of killing it."""

    def __init__(self, enabled: bool = True) -> None:
        self.signum: int | None = None
        self.enabled = enabled
        self._old: dict[int, Any] = {}
        self._escalate = "TORCHELASTIC_RUN_ID" not in os.environ  # torchrun's launcher escalates itself

    def __enter__(self) -> StopOnSignal:
        if self.enabled and threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._note) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._restore()

    def _restore(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
        self._old = {}

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            then = (
                "again to stop now" if self._escalate else "the launcher kills it after its shutdown timeout"
            )
            log.warning(
                "%s: stopping after this step with a checkpoint (%s)", signal.Signals(signum).name, then
            )
        elif self._escalate:
            self._restore()
            signal.raise_signal(signum)  # handled as if we had never been here

    def requested(self, ctx: DistContext) -> bool:
        """Whether to stop now: a signal reached this process (or, in a process group, any rank)."""
        if not ctx.initialized:
            return self.signum is not None
        mine = torch.tensor([float(self.signum is not None), float(self.signum or 0)], dtype=torch.float64)
        ranks, signums = ctx.all_reduce_sum(mine).tolist()  # how many ranks were signalled, and with what
        if ranks and self.signum is None:
            self.signum = round(signums / ranks)  # another rank's signal: this one stops with it
        return ranks > 0
