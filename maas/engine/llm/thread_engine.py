"""The LLM engine's step loop in a background thread of this process (tests, `maas run`): the client
of engine/llm/client.py over a queue.

Cancelling a stream (client gone, task cancelled) aborts its request at the next step and frees its cache.
"""

from __future__ import annotations

import queue
import threading

from maas.engine.llm.client import EngineClient
from maas.engine.llm.engine import Engine
from maas.engine.llm.loop import run_loop
from maas.engine.llm.messages import Command, Exited, Stop


class ThreadEngine(EngineClient):
    """Runs engine/llm/loop.py's loop over `engine` in a thread; streams outputs to asyncio callers."""

    def __init__(self, engine: Engine):
        super().__init__()
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.chat_template = engine.lm.chat_template
        self.max_model_len = engine.max_model_len
        self.max_num_seqs = engine.config.max_num_seqs
        self.vocab_size = engine.lm.config.vocab_size
        self._cmds: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="maas-engine", daemon=True)
        self._thread.start()

    def _receive(self, timeout: float) -> Command | None:
        try:
            return self._cmds.get(timeout=timeout) if timeout > 0 else self._cmds.get_nowait()
        except queue.Empty:
            return None

    def _run(self) -> None:
        try:
            run_loop(self.engine, self._receive, self._on_event)
        finally:
            self._on_event(Exited("stopped" if self._stopping else "the engine thread ended"))

    def _send(self, cmd: Command) -> None:
        self._cmds.put(cmd)

    def _running(self) -> bool:
        return self._thread.is_alive()

    def shutdown(self) -> None:
        """Stop the loop thread (in-flight requests are dropped)."""
        self._stopping = True
        self._cmds.put(Stop())
        self._thread.join(timeout=10)
