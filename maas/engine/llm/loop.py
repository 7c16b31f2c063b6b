"""The LLM engine's step loop, one for both transports: take commands, step, report events.

    run_loop(engine, receive, send)   # in a thread (ThreadEngine) or a child process (ProcessEngine)

`receive(timeout)` returns the next command or None after `timeout` seconds (0: do not wait); `send` hands
an event to the client. The loop returns on Stop, when the client's end is gone (EOFError / OSError from
either), or when idle and `orphaned()` says the client's process is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from maas.engine.llm.engine import Engine
from maas.engine.llm.messages import Abort, Add, Command, Event, Rejected, StepFailed, Stepped, Stop
from maas.engine.llm.request import RequestOutput
from maas.errors import MaasError

log = logging.getLogger("maas.engine")
IDLE_WAIT = 0.5  # seconds a loop with nothing to run waits for a command


def run_loop(
    engine: Engine,
    receive: Callable[[float], Command | None],
    send: Callable[[Event], None],
    orphaned: Callable[[], bool] = lambda: False,
) -> None:
    """Serve commands until Stop (see the module docstring)."""
    try:
        while True:
            busy = engine.has_unfinished()
            changed = False
            while (cmd := receive(0.0 if busy else IDLE_WAIT)) is not None:
                changed = busy = True
                if isinstance(cmd, Stop):
                    return
                if isinstance(cmd, Abort):
                    engine.abort_request(cmd.request_id)
                elif isinstance(cmd, Add):
                    _add(engine, cmd, send)
            if not busy:
                if orphaned():
                    return
                continue
            outputs: list[RequestOutput] = []
            if engine.has_unfinished():
                try:
                    outputs = engine.step()
                except Exception as e:  # a bug or out of memory: fail what is in flight, keep serving
                    ids = engine.request_ids()
                    log.exception("engine step failed; aborting %d requests", len(ids))
                    for rid in ids:
                        engine.abort_request(rid)
                    send(StepFailed(f"{type(e).__name__}: {e}", ids))
                    continue
            if outputs or changed:
                send(Stepped(outputs, engine.stats()))
    except (EOFError, OSError):  # the client's end of the pipe is gone
        return


def _add(engine: Engine, cmd: Add, send: Callable[[Event], None]) -> None:
    try:
        engine.add_request(cmd.request_id, cmd.prompt_token_ids, cmd.params)
    except MaasError as e:
        send(Rejected(cmd.request_id, e.message, e.param))
    except Exception as e:  # a bug: this request fails, the loop goes on
        log.exception("adding request %s failed", cmd.request_id)
        send(Rejected(cmd.request_id, f"{type(e).__name__}: {e}", internal=True))
