"""The asyncio front of the engine: a thread runs the step loop; callers get async streams.

Cancelling a stream (client gone, task cancelled) aborts its request at the next step and frees
its cache.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

from maas.engine.engine import Engine
from maas.engine.request import RequestOutput
from maas.engine.sampling_params import SamplingParams
from maas.errors import EngineDeadError, MaasError

log = logging.getLogger("maas.engine")


@dataclass
class _Sub:
    """Where the outputs of one sub-request (one of n choices) go."""

    index: int
    queue: asyncio.Queue[tuple[int, RequestOutput | BaseException]]
    loop: asyncio.AbstractEventLoop


class AsyncEngine:
    """Runs `Engine.step()` in a background thread and streams outputs to asyncio callers."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._cmds: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._subs: dict[str, _Sub] = {}
        self._stop = False
        self._dead: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="maas-engine", daemon=True)
        self._thread.start()
        self.num_steps = 0

    # -- facts the server may read -------------------------------------------------------------

    @property
    def max_model_len(self) -> int:
        """The longest prompt + output this engine accepts."""
        return self.engine.max_model_len

    @property
    def tokenizer(self):  # noqa: ANN201 - maas.text.tokenizer.Tokenizer
        """The model's tokenizer."""
        return self.engine.tokenizer

    @property
    def chat_template(self):  # noqa: ANN201 - maas.text.chat_template.ChatTemplate
        """The model's chat template."""
        return self.engine.lm.chat_template

    def check_prompt(self, prompt_len: int, max_tokens: int | None, param: str = "messages") -> int:
        """Validate lengths before queueing (raises ContextLengthError)."""
        return self.engine.check_prompt(prompt_len, max_tokens, param)

    @property
    def alive(self) -> bool:
        """True while the loop thread runs."""
        return self._thread.is_alive() and not self._stop

    def stats(self) -> dict[str, float]:
        """Running / waiting counts and KV-cache usage."""
        return {
            "running": self.engine.num_running,
            "waiting": self.engine.num_waiting,
            "kv_cache_usage": self.engine.blocks.usage,
        }

    # -- the loop thread -------------------------------------------------------------------------

    def _deliver(self, rid: str, item: RequestOutput | BaseException) -> None:
        self._deliver_many([(rid, item)])

    def _deliver_many(self, items: list[tuple[str, RequestOutput | BaseException]]) -> None:
        """Hand a step's outputs to their streams with one wake-up per event loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Sub, RequestOutput | BaseException]]] = {}
        for rid, item in items:
            sub = self._subs.get(rid)
            if sub is None:
                continue
            if isinstance(item, BaseException) or item.finished:
                self._subs.pop(rid, None)
            by_loop.setdefault(sub.loop, []).append((sub, item))
        for loop, batch in by_loop.items():
            loop.call_soon_threadsafe(_put_all, batch)

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
                self._subs.pop(str(arg), None)

    def _loop(self) -> None:
        while not self._stop:
            self._drain()
            if not self.engine.has_unfinished():
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            try:
                outs = self.engine.step()
                self.num_steps += 1
            except Exception as e:  # a bug or out-of-memory: fail what is in flight, keep serving
                log.exception("engine step failed; aborting %d requests", len(self._subs))
                err = EngineDeadError(
                    f"the engine failed while running this request: {type(e).__name__}: {e}"
                )
                for rid in list(self._subs):
                    self.engine.abort_request(rid)
                    self._deliver(rid, err)
                continue
            if outs:
                self._deliver_many([(o.request_id, o) for o in outs])

    def shutdown(self) -> None:
        """Stop the loop thread (in-flight requests are dropped)."""
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=10)

    # -- the caller's side -----------------------------------------------------------------------

    async def generate(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> AsyncIterator[tuple[int, RequestOutput]]:
        """Stream (choice index, output) pairs for `params.n` choices until all finish."""
        if self._stop or not self._thread.is_alive():
            raise EngineDeadError("the engine is not running")
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[tuple[int, RequestOutput | BaseException]] = asyncio.Queue()
        rids = [request_id if params.n == 1 else f"{request_id}-{i}" for i in range(params.n)]
        for i, rid in enumerate(rids):
            p = params
            if params.n > 1:
                p = params.with_(n=1, seed=None if params.seed is None else params.seed + i)
            self._subs[rid] = _Sub(i, q, loop)
            self._cmds.put(("add", (rid, prompt_token_ids, p)))
        self._wake.set()
        left = set(range(params.n))
        try:
            while left:
                idx, item = await q.get()
                if isinstance(item, BaseException):
                    if isinstance(item, MaasError):
                        raise item
                    raise EngineDeadError(str(item))
                if item.finished:
                    left.discard(idx)
                yield idx, item
        finally:
            for i in left:
                self.abort(rids[i])

    def abort(self, request_id: str) -> None:
        """Abort a request from any thread."""
        self._cmds.put(("abort", request_id))
        self._wake.set()


def _put_all(batch: list[tuple[_Sub, RequestOutput | BaseException]]) -> None:
    for sub, item in batch:
        sub.queue.put_nowait((sub.index, item))


def request_id(prefix: str = "req") -> str:
    """A fresh unique request id."""
    return f"{prefix}-{uuid.uuid4().hex}"
