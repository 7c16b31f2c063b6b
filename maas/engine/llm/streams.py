"""Per-request asyncio streams fed from a thread that is not the event loop's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from maas.engine.llm.request import RequestOutput
from maas.engine.llm.sampling_params import SamplingParams
from maas.errors import EngineDeadError, MaasError

Item = RequestOutput | BaseException


@dataclass
class _Sub:
    """Where the outputs of one sub-request (one of n choices) go."""

    index: int
    queue: asyncio.Queue[tuple[int, Item]]
    loop: asyncio.AbstractEventLoop


class StreamHub:
    """Routes engine outputs (or errors) to the asyncio queue of the request they belong to."""

    def __init__(self) -> None:
        self.subs: dict[str, _Sub] = {}

    def __len__(self) -> int:
        return len(self.subs)

    def ids(self) -> list[str]:
        """Request ids with a waiting stream."""
        return list(self.subs)

    def forget(self, request_id: str) -> None:
        """Stop routing to a request (it was aborted)."""
        self.subs.pop(request_id, None)

    def dispatch(self, items: list[tuple[str, Item]]) -> None:
        """Hand a step's outputs to their streams, one wake-up per event loop (any thread)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Sub, Item]]] = {}
        for rid, item in items:
            sub = self.subs.get(rid)
            if sub is None:
                continue
            if isinstance(item, BaseException) or item.finished:
                self.subs.pop(rid, None)
            by_loop.setdefault(sub.loop, []).append((sub, item))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, batch)
            except RuntimeError:  # that event loop is closed: nobody is listening any more
                for sub, _ in batch:
                    self.subs = {k: v for k, v in self.subs.items() if v is not sub}

    async def stream(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        submit: Callable[[str, list[int], SamplingParams], None],
        abort: Callable[[str], None],
    ) -> AsyncGenerator[tuple[int, RequestOutput], None]:
        """Fan `params.n` choices out as sub-requests; yield (choice index, output) until all finish.

        Leaving early (the caller cancelled, the client went away) aborts what is still running.
        """
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[tuple[int, Item]] = asyncio.Queue()
        n = params.n
        rids = [request_id if n == 1 else f"{request_id}-{i}" for i in range(n)]
        for i, rid in enumerate(rids):
            p = params if n == 1 else params.with_(n=1, seed=None if params.seed is None else params.seed + i)
            self.subs[rid] = _Sub(i, q, loop)
            submit(rid, prompt_token_ids, p)
        left = set(range(n))
        try:
            while left:
                idx, item = await q.get()
                if isinstance(item, MaasError):
                    raise item
                if isinstance(item, BaseException):
                    raise EngineDeadError(str(item))
                if item.finished:
                    left.discard(idx)
                yield idx, item
        finally:
            for i in left:
                abort(rids[i])


def _put_all(batch: list[tuple[_Sub, Item]]) -> None:
    for sub, item in batch:
        sub.queue.put_nowait((sub.index, item))
