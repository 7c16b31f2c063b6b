"""The server's side of an LLM engine, once for both transports (engine/protocol.py's LLMClient).

    eng = ThreadEngine(engine)            # the step loop in a thread (tests, `maas run`)
    eng = ProcessEngine(path, config)    # the step loop in a child process (serving)
    async for index, out in eng.generate(request_id, prompt_ids, params): ...

A subclass starts the loop (engine/llm/loop.py) and says how a command reaches it (`_send`), whether it runs
(`_running`) and how to stop it; everything else (limits, fanning n out into streams, routing the loop's
events to them, failing them when the loop dies) is here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator

from maas.engine.llm.limits import check_prompt, check_token_ids
from maas.engine.llm.messages import Abort, Add, Command, Event, Exited, Rejected, StepFailed, Stepped
from maas.engine.llm.request import RequestOutput
from maas.engine.llm.sampling_params import SamplingParams
from maas.engine.llm.streams import StreamHub
from maas.errors import EngineDeadError, InvalidRequestError
from maas.text.chat_template import ChatTemplate
from maas.text.tokenizer import Tokenizer

log = logging.getLogger("maas.engine")


class EngineClient:
    """Limits, streams and the loop's events; `_send`, `_running`, `memory_bytes` and `shutdown` are the
    transport's."""

    tokenizer: Tokenizer
    chat_template: ChatTemplate
    max_model_len: int
    max_num_seqs: int
    vocab_size: int

    def __init__(self) -> None:
        self._stats: dict[str, float] = {"running": 0, "waiting": 0, "kv_cache_usage": 0.0}
        self._hub = StreamHub()
        self._dead: str | None = None
        self._stopping = False

    # -- the transport's ---------------------------------------------------------------------

    def _send(self, cmd: Command) -> None:
        raise NotImplementedError

    def _running(self) -> bool:
        raise NotImplementedError

    def memory_bytes(self) -> int | None:
        """Bytes the engine holds, when measurable."""
        return None

    def shutdown(self) -> None:
        """Stop the loop (in-flight requests fail)."""
        raise NotImplementedError

    # -- facts ---------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """True while the loop runs."""
        return self._dead is None and not self._stopping and self._running()

    def stats(self) -> dict[str, float]:
        """Running / waiting counts and KV-cache usage, as of the last step."""
        return dict(self._stats)

    def check_prompt(self, prompt_len: int, max_tokens: int | None, param: str = "messages") -> int:
        """The max_tokens to use (ContextLengthError when the prompt does not fit)."""
        return check_prompt(prompt_len, max_tokens, self.max_model_len, param)

    # -- the loop's events (from the transport's thread) ---------------------------------------

    def _on_event(self, ev: Event) -> None:
        if isinstance(ev, Stepped):
            self._stats = ev.stats
            self._hub.dispatch([(o.request_id, o) for o in ev.outputs])
        elif isinstance(ev, Rejected):
            err: Exception = (
                EngineDeadError(f"the engine failed to add this request: {ev.message}")
                if ev.internal
                else InvalidRequestError(ev.message, param=ev.param)
            )
            self._hub.dispatch([(ev.request_id, err)])
        elif isinstance(ev, StepFailed):
            dead = EngineDeadError(f"the engine failed while running this request: {ev.reason}")
            self._hub.dispatch([(rid, dead) for rid in ev.request_ids])
        elif isinstance(ev, Exited):
            self._dead = ev.reason
            if self._stopping:
                log.debug("engine stopped")
            else:
                log.error("engine stopped: %s", ev.reason)
            gone = EngineDeadError(f"the engine stopped: {ev.reason}")
            self._hub.dispatch([(rid, gone) for rid in self._hub.ids()])

    # -- callers -------------------------------------------------------------------------------

    def generate(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> AsyncGenerator[tuple[int, RequestOutput], None]:
        """Stream (choice index, output) pairs for `params.n` choices; closing it aborts the rest."""
        if not self.alive:
            raise EngineDeadError(f"the engine is not running: {self._dead or 'stopped'}")
        check_token_ids(prompt_token_ids, self.vocab_size)
        return self._hub.stream(request_id, prompt_token_ids, params, self._submit, self.abort)

    def _submit(self, rid: str, ids: list[int], params: SamplingParams) -> None:
        self._send(Add(rid, ids, params))

    def abort(self, request_id: str) -> None:
        """Abort a request from any thread (its cache is freed at the loop's next step)."""
        self._hub.forget(request_id)
        if self.alive:
            with contextlib.suppress(EngineDeadError):
                self._send(Abort(request_id))
