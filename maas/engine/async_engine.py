"""The asyncio front of the engine: a thread runs the step loop; callers get async streams.

Cancelling a stream (client gone, task cancelled) aborts its request at the next step and frees
its cache.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import AsyncGenerator
from typing import cast

from maas.engine.engine import Engine
from maas.engine.request import RequestOutput
from maas.engine.sampling_params import SamplingParams
from maas.engine.streams import StreamHub
from maas.errors import EngineDeadError
from maas.text.chat_template import ChatTemplate
from maas.text.tokenizer import Tokenizer

log = logging.getLogger("maas.engine")


class AsyncEngine:
    """Runs `Engine.step()` in a background thread and streams outputs to asyncio callers."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._cmds: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._hub = StreamHub()
        self._stop = False
        self._dead: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="maas-engine", daemon=True)
        self._thread.start()

    # -- facts the server may read -------------------------------------------------------------

    @property
    def max_model_len(self) -> int:
        """The longest prompt + output this engine accepts."""
        return self.engine.max_model_len

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer."""
        return self.engine.tokenizer

    @property
    def chat_template(self) -> ChatTemplate:
        """The model's chat template."""
        return self.engine.lm.chat_template

    @property
    def max_num_seqs(self) -> int:
        """Sequences in the running batch at most."""
        return self.engine.config.max_num_seqs

    def memory_bytes(self) -> int | None:
        """Not measured in-thread (the server's engines run in their own processes)."""
        return None

    def check_prompt(self, prompt_len: int, max_tokens: int | None, param: str = "messages") -> int:
        """Validate lengths before queueing (raises ContextLengthError)."""
        return self.engine.check_prompt(prompt_len, max_tokens, param)

    @property
    def alive(self) -> bool:
        """True while the loop thread runs."""
        return self._thread.is_alive() and not self._stop

    def stats(self) -> dict[str, float]:
        """Running / waiting counts and KV-cache usage."""
        return self.engine.stats()

    # -- the loop thread -------------------------------------------------------------------------

    def _deliver(self, rid: str, item: RequestOutput | BaseException) -> None:
        self._hub.dispatch([(rid, item)])

    def _drain(self) -> None:
        while True:
            try:
                op, arg = self._cmds.get_nowait()
            except queue.Empty:
                return
            if op == "add":
                rid, ids, params = cast(tuple[str, list[int], SamplingParams], arg)
                try:
                    self.engine.add_request(rid, ids, params)
                except Exception as e:  # validation failed after queueing: tell the caller
                    self._deliver(rid, e)
            elif op == "abort":
                self.engine.abort_request(str(arg))
                self._hub.forget(str(arg))

    def _loop(self) -> None:
        while not self._stop:
            self._drain()
            if not self.engine.has_unfinished():
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            try:
                outs = self.engine.step()
            except Exception as e:  # a bug or out-of-memory: fail what is in flight, keep serving
                log.exception("engine step failed; aborting %d requests", len(self._hub))
                err = EngineDeadError(
                    f"the engine failed while running this request: {type(e).__name__}: {e}"
                )
                for rid in self._hub.ids():
                    self.engine.abort_request(rid)
                    self._deliver(rid, err)
                continue
            if outs:
                self._hub.dispatch([(o.request_id, o) for o in outs])

    def shutdown(self) -> None:
        """Stop the loop thread (in-flight requests are dropped)."""
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=10)

    # -- the caller's side -----------------------------------------------------------------------

    def generate(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> AsyncGenerator[tuple[int, RequestOutput], None]:
        """Stream (choice index, output) pairs for `params.n` choices; closing it aborts the rest."""
        if self._stop or not self._thread.is_alive():
            raise EngineDeadError("the engine is not running")
        return self._hub.stream(request_id, prompt_token_ids, params, self._submit, self.abort)

    def _submit(self, rid: str, ids: list[int], params: SamplingParams) -> None:
        self._cmds.put(("add", (rid, ids, params)))
        self._wake.set()

    def abort(self, request_id: str) -> None:
        """Abort a request from any thread."""
        self._cmds.put(("abort", request_id))
        self._wake.set()


def request_id(prefix: str = "req") -> str:
    """A fresh unique request id."""
    return f"{prefix}-{uuid.uuid4().hex}"
