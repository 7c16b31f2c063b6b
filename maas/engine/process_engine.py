"""The engine in its own process, so that the HTTP server and the step loop never share a GIL.

The server process keeps the tokenizer and chat template (to render and count prompts) and talks
to the engine process over two pipes: commands go in (add, abort, stop), each step's outputs and
counters come back. A reader thread hands outputs to per-request asyncio queues, one wake-up per
step. If the engine process dies, every waiting request fails with a 503 and /health says so.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import threading
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from maas.engine.child import load_in_child, resident_bytes, spawn_and_wait
from maas.engine.limits import check_prompt, check_token_ids
from maas.engine.request import RequestOutput
from maas.engine.sampling_params import SamplingParams
from maas.engine.streams import StreamHub
from maas.errors import EngineDeadError, InvalidRequestError, MaasError
from maas.formats import open_model_files
from maas.text.chat_template import ChatTemplate
from maas.text.tokenizer import Tokenizer

log = logging.getLogger("maas.engine")


def _engine_main(path: str, config: Any, cmd: Any, out: Any, log_level: int) -> None:
    """Child process: load the model, then loop: read commands, step, send outputs."""
    from maas.engine.engine import Engine

    engine = load_in_child(lambda: Engine.from_path(path, config), out, log_level)
    if engine is None:
        return
    try:
        out.send(
            ("ready", {"max_model_len": engine.max_model_len, "vocab_size": engine.lm.config.vocab_size})
        )
    except (BrokenPipeError, EOFError, OSError):
        return  # the server went away while we loaded: nothing to serve
    parent = os.getppid()

    while True:
        busy = engine.has_unfinished()
        changed = False
        try:
            while cmd.poll(0 if busy else 0.5):
                op, arg = cmd.recv()
                changed = True
                if op == "add":
                    rid, ids, params = arg
                    try:
                        engine.add_request(rid, ids, params)
                    except MaasError as e:
                        out.send(("error", rid, e.message, e.param))
                elif op == "abort":
                    engine.abort_request(arg)
                elif op == "stop":
                    return
                busy = True
        except (EOFError, OSError):  # the server went away
            return
        if not busy and os.getppid() != parent:
            return
        outputs: list[RequestOutput] = []
        if engine.has_unfinished():
            try:
                outputs = engine.step()
            except Exception as e:
                logging.getLogger("maas.engine").exception("engine step failed")
                out.send(("crashed", f"{type(e).__name__}: {e}"))
                return
        if outputs or changed:
            out.send(("step", outputs, engine.stats()))


class ProcessEngine:
    """Same interface as `AsyncEngine`, with the step loop in a child process."""

    def __init__(self, path: str | Path, config: Any, load_timeout: float = 900.0):
        files = open_model_files(path)  # reads metadata only: fails fast on a bad file
        self.tokenizer = Tokenizer.from_source(files.tokenizer)
        self.chat_template = ChatTemplate(
            files.tokenizer.chat_template, self.tokenizer.bos_token, self.tokenizer.eos_token
        )
        ctx = mp.get_context("spawn")
        self._cmd_r, self._cmd_w = ctx.Pipe(duplex=False)
        self._out_r, self._out_w = ctx.Pipe(duplex=False)
        self._proc, info = spawn_and_wait(
            _engine_main,
            (str(path), config, self._cmd_r, self._out_w, logging.getLogger().getEffectiveLevel()),
            "maas-engine",
            self._out_r,
            [self._out_w, self._cmd_r],
            load_timeout,
            "engine",
        )
        self.max_model_len: int = info["max_model_len"]
        self.max_num_seqs: int = int(getattr(config, "max_num_seqs", 32))
        self.vocab_size: int = info["vocab_size"]
        self._stats: dict[str, float] = {"running": 0, "waiting": 0, "kv_cache_usage": 0.0}
        self._hub = StreamHub()
        self._send_lock = threading.Lock()
        self._dead: str | None = None
        self._stopping = False
        self._reader = threading.Thread(target=self._read, name="maas-engine-reader", daemon=True)
        self._reader.start()

    # -- facts -------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """True while the engine process runs."""
        return self._dead is None and self._proc.is_alive()

    def stats(self) -> dict[str, float]:
        """Running / waiting counts and KV-cache usage, as of the last step."""
        return dict(self._stats)

    def memory_bytes(self) -> int | None:
        """Resident memory of the engine process (None once it has exited)."""
        return resident_bytes(self._proc)

    def check_prompt(self, prompt_len: int, max_tokens: int | None, param: str = "messages") -> int:
        """Validate lengths before queueing (raises ContextLengthError)."""
        return check_prompt(prompt_len, max_tokens, self.max_model_len, param)

    # -- reader thread -----------------------------------------------------------------------

    def _read(self) -> None:
        while True:
            try:
                msg = self._out_r.recv()
            except (EOFError, OSError):
                msg = ("crashed", f"the engine process exited (code {self._proc.exitcode})")
            kind = msg[0]
            if kind == "step":
                _, outputs, stats = msg
                self._stats = stats
                self._hub.dispatch([(o.request_id, o) for o in outputs])
            elif kind == "error":
                _, rid, message, param = msg
                self._hub.dispatch([(rid, InvalidRequestError(message, param=param))])
            elif kind == "crashed":
                self._dead = msg[1]
                if self._stopping:
                    log.debug("engine process stopped")
                else:
                    log.error("engine process stopped: %s", msg[1])
                err = EngineDeadError(f"the engine stopped: {msg[1]}")
                self._hub.dispatch([(rid, err) for rid in self._hub.ids()])
                return

    def _send(self, msg: tuple[Any, ...]) -> None:
        with self._send_lock:
            try:
                self._cmd_w.send(msg)
            except (OSError, ValueError):
                raise EngineDeadError("the engine process is not running") from None

    # -- callers -----------------------------------------------------------------------------

    def generate(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> AsyncGenerator[tuple[int, RequestOutput], None]:
        """Stream (choice index, output) pairs for `params.n` choices; closing it aborts the rest."""
        if not self.alive:
            raise EngineDeadError(f"the engine is not running: {self._dead or 'stopped'}")
        check_token_ids(prompt_token_ids, self.vocab_size)
        return self._hub.stream(request_id, prompt_token_ids, params, self._submit, self.abort)

    def _submit(self, rid: str, ids: list[int], params: SamplingParams) -> None:
        self._send(("add", (rid, ids, params)))

    def abort(self, request_id: str) -> None:
        """Abort a request (its cache is freed at the engine's next step)."""
        self._hub.forget(request_id)
        if self.alive:
            with contextlib.suppress(EngineDeadError):
                self._send(("abort", request_id))

    def shutdown(self) -> None:
        """Stop the engine process."""
        self._stopping = True
        if self._proc.is_alive():
            with contextlib.suppress(EngineDeadError):
                self._send(("stop", None))
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()
