"""Dynamic batching: concurrent requests share forward passes (embeddings and tensor models alike).

A request submits items (sentences, or one tensor request's rows); a worker thread takes what is
queued, waiting at most `max_wait_s` for company while fewer than `wait_rows` rows are there and
the rows have not yet hit one of the `preferred` sizes (what is already queued still joins), splits the window into batches of at most
`max_batch_size` rows (a `plan` may sort and cut them differently; items batch only with items
of the same key), runs each batch through `run` in one call and hands every request its own
results, in its own order. While a batch runs, new requests queue up for the next one. At most
`max_queue` items wait; more are refused with OverloadedError (HTTP 429).

b = DynamicBatcher(lambda xs: [x * 2 for x in xs], name="double", max_batch_size=8)
await b.submit([(3, 1), (4, 1)])   # [6, 8]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from maas.errors import EngineDeadError, MaasError, OverloadedError

log = logging.getLogger("maas.engine")

P = TypeVar("P")  # what an item carries into a batch
R = TypeVar("R")  # what the batch gives back per item


@dataclass
class _Job:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[Any]]
    results: list[Any]
    left: int


@dataclass
class Item(Generic[P]):
    """One unit of a request in the queue: its payload, how many batch rows it takes, its key."""

    payload: P
    rows: int
    key: Hashable
    job: _Job
    index: int
    queued_at: float


@dataclass
class BatchStats:
    """Counters for /health and metrics."""

    requests: int = 0
    items: int = 0
    rows: int = 0
    batches: int = 0
    batch_sizes: list[int] = field(default_factory=list)  # recent batch sizes in rows (last 1000)


Plan = Callable[[list[Item[Any]]], list[list[Item[Any]]]]


class DynamicBatcher(Generic[P, R]):
    """`run(payloads) -> results` behind a batching worker thread; `await submit(...)` from any loop."""

    def __init__(
        self,
        run: Callable[[list[P]], list[R]],
        *,
        name: str,
        max_batch_size: int,
        max_wait_s: float = 0.001,
        wait_rows: int | None = None,
        preferred: tuple[int, ...] = (),
        max_queue: int = 0,
        window_rows: int | None = None,
        plan: Plan | None = None,
    ):
        self.run_batch = run
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.wait_rows = wait_rows if wait_rows is not None else max_batch_size
        self.preferred = frozenset(preferred)
        self.max_queue = max_queue  # 0 = unbounded
        self.window_rows = window_rows or max_batch_size
        self.plan: Plan = plan or self.by_key
        self.stats_ = BatchStats()
        self.on_batch: Callable[[int, list[float]], None] | None = None  # (rows, queue times) per batch
        self._q: queue.Queue[Item[P] | None] = queue.Queue()
        self._dead: str | None = None
        self._thread = threading.Thread(target=self._work, name=f"maas-batcher-{name}", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """True while the worker thread runs."""
        return self._dead is None and self._thread.is_alive()

    @property
    def queued(self) -> int:
        """Items waiting for a batch."""
        return self._q.qsize()

    async def submit(self, items: list[tuple[P, int]], key: Hashable = None) -> list[R]:
        """Results for (payload, rows) items, in the order given, once their batches have run."""
        if not items:
            return []
        if not self.alive:
            raise EngineDeadError(f"the batching worker is not running: {self._dead or 'stopped'}")
        if self.max_queue and self._q.qsize() + len(items) > self.max_queue:
            raise OverloadedError(
                f"{self._q.qsize()} inputs are already queued for this model (limit {self.max_queue}); retry shortly",
                code="queue_full",
            )
        loop = asyncio.get_running_loop()
        job = _Job(loop, loop.create_future(), [None] * len(items), len(items))
        self.stats_.requests += 1
        now = time.monotonic()
        for i, (payload, rows) in enumerate(items):
            self._q.put(Item(payload, rows, key, job, i, now))
        return await job.future

    def close(self) -> None:
        """Stop the worker after the batch in progress; requests still queued fail."""
        self._q.put(None)
        self._thread.join(10)
        self._fail_queued(EngineDeadError("the model was unloaded"))

    def _fail_queued(self, err: BaseException) -> None:
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                _fail(item.job, err)

    # -- batch plans ---------------------------------------------------------------------------

    def by_key(self, items: list[Item[Any]]) -> list[list[Item[Any]]]:
        """Arrival order within each key, cut into batches of at most max_batch_size rows."""
        groups: dict[Hashable, list[Item[Any]]] = {}
        for it in items:
            groups.setdefault(it.key, []).append(it)
        out: list[list[Item[Any]]] = []
        for group in groups.values():
            cur: list[Item[Any]] = []
            rows = 0
            for it in group:
                if cur and rows + it.rows > self.max_batch_size:
                    out.append(cur)
                    cur, rows = [], 0
                cur.append(it)
                rows += it.rows
            out.append(cur)
        return out

    # -- worker --------------------------------------------------------------------------------

    def _take(self) -> list[Item[P]] | None:
        first = self._q.get()
        if first is None:
            return None
        items, rows = [first], first.rows
        deadline = time.monotonic() + self.max_wait_s
        settled = rows in self.preferred  # a preferred size was reached: take what is queued, wait no more
        while rows < self.window_rows:
            wait = max(0.0, deadline - time.monotonic()) if rows < self.wait_rows and not settled else 0.0
            try:
                item = self._q.get(timeout=wait) if wait > 0 else self._q.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._q.put(None)
                break
            items.append(item)
            rows += item.rows
            settled = settled or rows in self.preferred
        return items

    def _work(self) -> None:
        items: list[Item[P]] = []
        try:
            while (taken := self._take()) is not None:
                items = taken
                for batch in self.plan(items):
                    self._run(batch)
        except Exception as e:  # a bug: fail every waiting request rather than hang them
            self._dead = f"{type(e).__name__}: {e}"
            log.exception("batching worker stopped")
            err = EngineDeadError(f"the batching worker stopped: {self._dead}")
            for it in items:  # the window in progress (failing a finished job is a no-op)
                _fail(it.job, err)
            self._fail_queued(err)

    def _run(self, batch: list[Item[P]]) -> None:
        start = time.monotonic()
        try:
            results = self.run_batch([it.payload for it in batch])
        except Exception as e:
            if len(batch) > 1 and not isinstance(e, EngineDeadError):  # one by one: only the bad one fails
                for it in batch:
                    self._run([it])
                return
            if not isinstance(e, MaasError):
                log.exception("batch failed")
                e = EngineDeadError(f"the model failed: {type(e).__name__}: {e}")
            _fail(batch[0].job, e)
            return
        rows = sum(it.rows for it in batch)
        s = self.stats_
        s.batches += 1
        s.items += len(batch)
        s.rows += rows
        s.batch_sizes = [*s.batch_sizes[-999:], rows]
        if self.on_batch is not None:
            self.on_batch(rows, [start - it.queued_at for it in batch])
        for it, r in zip(batch, results, strict=True):
            job = it.job
            job.results[it.index] = r
            job.left -= 1
            if job.left == 0:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                    job.loop.call_soon_threadsafe(_resolve, job.future, job.results)


class Batched:
    """An engine in front of a DynamicBatcher: the hook called after each batch is the batcher's."""

    batcher: DynamicBatcher[Any, Any]

    @property
    def on_batch(self) -> Callable[[int, list[float]], None] | None:
        """Called with each batch's rows and its items' queue times (metrics)."""
        return self.batcher.on_batch

    @on_batch.setter
    def on_batch(self, fn: Callable[[int, list[float]], None] | None) -> None:
        self.batcher.on_batch = fn


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(job: _Job, err: BaseException) -> None:
    def set_err() -> None:
        if not job.future.done():
            job.future.set_exception(err)

    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
        job.loop.call_soon_threadsafe(set_err)
