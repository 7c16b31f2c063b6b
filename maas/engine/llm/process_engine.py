"""The LLM engine's step loop in its own process, so that the HTTP server and the loop never share a GIL:
the client of engine/llm/client.py over two pipes.

The server process keeps the tokenizer and chat template (to render and count prompts); commands go down
one pipe, the loop's events (engine/llm/messages.py) come back up the other, read by a thread that hands
outputs to per-request asyncio queues, one wake-up per step. If the engine process dies, every waiting
request fails with a 503 and /health says so.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

from maas.engine.child import load_in_child, resident_bytes, spawn_and_wait
from maas.engine.llm.client import EngineClient
from maas.engine.llm.messages import Command, Exited, Stop
from maas.errors import EngineDeadError
from maas.formats import open_model_files
from maas.text.chat_template import ChatTemplate
from maas.text.tokenizer import Tokenizer

if TYPE_CHECKING:
    from maas.engine.llm.engine import EngineConfig

log = logging.getLogger("maas.engine")


def _engine_main(path: str, config: EngineConfig, cmd: Connection, out: Connection, log_level: int) -> None:
    """Child process: load the model, say so, then run the loop over the pipes."""
    from maas.engine.llm.engine import Engine
    from maas.engine.llm.loop import run_loop

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

    def receive(timeout: float) -> Command | None:
        return cmd.recv() if cmd.poll(timeout) else None  # type: ignore[no-any-return]

    run_loop(engine, receive, out.send, orphaned=lambda: os.getppid() != parent)


class ProcessEngine(EngineClient):
    """engine/llm/client.py's client with the loop in a spawned child process."""

    def __init__(self, path: str | Path, config: EngineConfig, load_timeout: float = 900.0):
        super().__init__()
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
        self.max_model_len = int(info["max_model_len"])
        self.max_num_seqs = int(getattr(config, "max_num_seqs", 32))
        self.vocab_size = int(info["vocab_size"])
        self._send_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="maas-engine-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                ev = self._out_r.recv()
            except (EOFError, OSError):
                self._on_event(Exited(f"the engine process exited (code {self._proc.exitcode})"))
                return
            self._on_event(ev)

    def _send(self, cmd: Command) -> None:
        with self._send_lock:
            try:
                self._cmd_w.send(cmd)
            except (OSError, ValueError):
                raise EngineDeadError("the engine process is not running") from None

    def _running(self) -> bool:
        return self._proc.is_alive()

    def memory_bytes(self) -> int | None:
        """Resident memory of the engine process (None once it has exited)."""
        return resident_bytes(self._proc)

    def shutdown(self) -> None:
        """Stop the engine process."""
        self._stopping = True
        if self._proc.is_alive():
            with contextlib.suppress(EngineDeadError):
                self._send(Stop())
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()
