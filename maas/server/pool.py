"""ModelPool: the models a server can answer for, loaded on demand and evicted least-recently-used.

A request takes a lease on its model (`await pool.acquire(name, kind)`), which loads the model if
needed and keeps it loaded until `lease.release()`. A model is evicted only when no lease is held
on it: when room is needed and every loaded model is busy, the least recently used one is marked
draining (new requests for it wait), and it is unloaded once its last request has finished.
Loads run one at a time in a worker thread; all bookkeeping happens on the event loop.
Once the server is stopping (`stop()`), an engine that dies is not loaded again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from maas.errors import EngineDeadError, InvalidRequestError, ModelNotFoundError
from maas.server.state import ModelSpec, ServedModel

if TYPE_CHECKING:
    from maas.models.families import Kind

STABLE_S = 60.0  # an engine that ran this long before dying restarts at once
MAX_BACKOFF_S = 30.0

log = logging.getLogger("maas.server")

Loader = Callable[[ModelSpec], ServedModel]
Lookup = Callable[[str], ModelSpec | None]


@dataclass
class _Entry:
    spec: ModelSpec
    served: ServedModel | None = None
    in_use: int = 0
    last_used: float = 0.0
    draining: bool = False
    loading: asyncio.Future[ServedModel] | None = None
    memory: int | None = None  # bytes, measured after the last load
    loads: int = 0
    restarts: int = 0  # loads after its engine died
    crashes: int = 0  # deaths in a row, each within STABLE_S of its load (for the backoff)
    up_since: float = 0.0
    left_dead: bool = False  # its engine died while the server was stopping (said once)


@dataclass
class Lease:
    """A hold on a loaded model; release it when the request is done (idempotent)."""

    model: ServedModel
    _release: Callable[[], None]
    _done: bool = field(default=False, repr=False)

    def release(self) -> None:
        """Let the model be evicted again once no other lease holds it."""
        if not self._done:
            self._done = True
            self._release()


class ModelPool:
    """Servable models by API name; at most `max_loaded` (and `memory_budget` bytes) loaded at once."""

    def __init__(
        self,
        specs: list[ModelSpec],
        load: Loader,
        max_loaded: int | None = None,
        memory_budget: int | None = None,
        lookup: Lookup | None = None,
        catalog: Callable[[], list[ModelSpec]] | None = None,
    ):
        self._entries: dict[str, _Entry] = {s.name: _Entry(s) for s in specs}
        self._static = [s.name for s in specs]
        self._load_fn = load
        self.max_loaded = max_loaded
        self.memory_budget = memory_budget
        self._lookup = lookup
        self._catalog = catalog
        self._changed: asyncio.Condition | None = None
        self._waiting = 0  # tasks waiting on _changed: a release notifies only when there are some
        self._load_lock: asyncio.Lock | None = None
        self.ready = False
        self.stopping = False  # the server is shutting down: dead engines stay dead
        self._closed = False  # shutdown() ran: a load that finishes now is stopped at once
        self.on_load: Callable[[ServedModel], None] | None = None  # e.g. attach metrics hooks
        self.on_restart: Callable[[str], None] | None = None  # a dead engine is being replaced (metrics)

    # -- names ---------------------------------------------------------------------------------

    def _cond(self) -> asyncio.Condition:
        if self._changed is None:  # created on the serving loop, not at construction
            self._changed = asyncio.Condition()
            self._load_lock = asyncio.Lock()
        return self._changed

    def _entry(self, name: str) -> _Entry:
        e = self._entries.get(name)
        if e is None and self._lookup is not None:
            spec = self._lookup(name)
            if spec is not None:
                e = self._entries.setdefault(spec.name, _Entry(spec))
                self._entries.setdefault(name, e)
        if e is None:
            known = ", ".join(sorted(self._static)) or "none"
            more = " (and the models in the registry: `maas models list`)" if self._lookup else ""
            raise ModelNotFoundError(f"The model {name!r} does not exist. Models served here: {known}{more}")
        return e

    def spec(self, name: str) -> tuple[ModelSpec, bool]:
        """One servable model and whether it is loaded (ModelNotFoundError when unknown)."""
        e = self._entry(name)
        return e.spec, e.served is not None

    def specs(self) -> list[tuple[ModelSpec, bool]]:
        """Every servable model (static ones first, then the registry's) and whether it is loaded."""
        seen: dict[str, tuple[ModelSpec, bool]] = {}
        for e in self._entries.values():
            seen.setdefault(e.spec.name, (e.spec, e.served is not None))
        for s in self._catalog() if self._catalog else []:
            seen.setdefault(s.name, (s, False))
        return list(seen.values())

    def loaded(self) -> list[ServedModel]:
        """The models loaded right now."""
        return [e.served for e in self._unique() if e.served is not None]

    def _unique(self) -> list[_Entry]:
        return list({id(e): e for e in self._entries.values()}.values())

    # -- leases --------------------------------------------------------------------------------

    async def acquire(self, name: str, kind: Kind | None = "llm") -> Lease:
        """A lease on the model `name` (of `kind`, any when None), loading it first if needed."""
        e = self._entry(name)
        if kind is not None and e.spec.kind != kind:
            raise InvalidRequestError(
                f"model {name!r} is a {e.spec.kind} model, not a {kind} model", param="model"
            )
        while True:
            if self._dead(e) and not self.stopping:  # its engine died; the supervisor has not seen it yet
                self._restart(e)
            if e.served is not None and not e.draining:
                e.in_use += 1
                e.last_used = time.monotonic()
                return Lease(e.served, lambda: self._release(e))
            if e.draining:
                await self._wait_until(lambda: not e.draining)
                continue
            if e.loading is None:
                e.loading = asyncio.ensure_future(self._load(e))
            e.in_use += 1  # reserved now, so nothing can evict the model between its load and this lease
            try:
                served = await asyncio.shield(e.loading)
            except BaseException:
                self._release(e)
                raise
            e.last_used = time.monotonic()
            return Lease(served, lambda: self._release(e))

    def _release(self, e: _Entry) -> None:
        e.in_use -= 1
        e.last_used = time.monotonic()
        if self._waiting:
            asyncio.ensure_future(self._notify())

    async def _notify(self) -> None:
        cond = self._cond()
        async with cond:
            cond.notify_all()

    async def _wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait for a change to the pool that makes `predicate()` true."""
        cond = self._cond()
        self._waiting += 1
        try:
            async with cond:
                await cond.wait_for(predicate)
        finally:
            self._waiting -= 1

    # -- loading and eviction ----------------------------------------------------------------

    async def _load(self, e: _Entry, delay: float = 0.0) -> ServedModel:
        self._cond()
        assert self._load_lock is not None
        try:
            if delay:
                await asyncio.sleep(delay)
            async with self._load_lock:
                await self._make_room(e)
                t0 = time.monotonic()
                served = await asyncio.to_thread(self._load_fn, e.spec)
                if self._closed:  # the server shut down while this model loaded
                    await asyncio.to_thread(served.engine.shutdown)
                    raise EngineDeadError("the server is shutting down")
                e.served, e.loads = served, e.loads + 1
                if self.on_load is not None:
                    self.on_load(served)
                e.memory = served.memory()
                e.last_used = e.up_since = time.monotonic()
                await self._trim(e)
                log.info("loaded %s in %.1f s (%s)", e.spec.name, time.monotonic() - t0, _fmt_bytes(e.memory))
                return served
        finally:
            e.loading = None
            await self._notify()

    def _over(self, e: _Entry, others: list[_Entry]) -> bool:
        if not others:
            return False
        if self.max_loaded is not None and len(others) >= self.max_loaded:
            return True
        if self.memory_budget is not None:
            used = sum(o.served.memory() or 0 for o in others if o.served is not None)
            need = e.memory if e.memory is not None else e.spec.estimate
            return used + need > self.memory_budget
        return False

    async def _make_room(self, e: _Entry) -> None:
        while True:
            others = [o for o in self._unique() if o.served is not None and o is not e]
            if not self._over(e, others):
                return
            others.sort(key=lambda o: o.last_used)
            idle = [o for o in others if o.in_use == 0]
            if idle:
                await self._unload(idle[0], reason=f"making room for {e.spec.name}")
                continue
            victim = others[0]
            victim.draining = True  # no new requests; unloaded when its last one finishes
            log.info("waiting for %s to finish its requests before unloading it", victim.spec.name)
            await self._wait_until(lambda v=victim: v.in_use == 0)  # type: ignore[misc]

    async def _trim(self, e: _Entry) -> None:
        """After a load measured more than estimated: unload idle LRU models until within budget."""
        if self.memory_budget is None:
            return
        while True:
            others = sorted(
                (o for o in self._unique() if o.served is not None and o is not e), key=lambda o: o.last_used
            )
            used = sum(o.served.memory() or 0 for o in [*others, e] if o.served is not None)
            idle = [o for o in others if o.in_use == 0]
            if used <= self.memory_budget or not idle:
                return
            await self._unload(idle[0], reason=f"over the memory budget after loading {e.spec.name}")

    async def _unload(self, e: _Entry, reason: str) -> None:
        served, e.served = e.served, None
        e.draining = False
        if served is not None:
            log.info("unloading %s (%s)", e.spec.name, reason)
            await asyncio.to_thread(served.engine.shutdown)
        await self._notify()

    # -- admin ---------------------------------------------------------------------------------

    async def load(self, name: str) -> ServedModel:
        """Load `name` now (evicting others as needed); returns once it is loaded."""
        lease = await self.acquire(name, kind=None)
        lease.release()
        return lease.model

    async def unload(self, name: str) -> bool:
        """Unload `name` once its running requests finish; False when it was not loaded."""
        e = self._entry(name)
        if e.loading is not None:
            await asyncio.shield(e.loading)
        if e.served is None:
            return False
        e.draining = True
        await self._wait_until(lambda: e.in_use == 0)
        await self._unload(e, reason="asked to")
        return True

    # -- the supervisor: a model whose engine died is loaded again ------------------------------

    def _dead(self, e: _Entry) -> bool:
        return e.served is not None and not e.draining and e.loading is None and not e.served.engine.alive

    def _restart(self, e: _Entry) -> None:
        """Forget the dead engine (its requests have failed with a 503) and load the model again, after a
        backoff when it keeps dying soon after loading."""
        assert e.served is not None
        now = time.monotonic()
        e.crashes = e.crashes + 1 if now - e.up_since < STABLE_S else 1
        delay = 0.0 if e.crashes == 1 else min(MAX_BACKOFF_S, 2.0 ** (e.crashes - 2))
        log.error(
            "%s: its engine stopped; loading it again%s", e.spec.name, f" in {delay:.0f} s" if delay else ""
        )
        try:
            e.served.engine.shutdown()
        except Exception:  # noqa: BLE001 - it is dead already; nothing to keep
            log.debug("shutting the dead engine of %s down failed", e.spec.name, exc_info=True)
        e.served, e.restarts = None, e.restarts + 1
        if self.on_restart is not None:
            self.on_restart(e.spec.name)
        e.loading = asyncio.ensure_future(self._load(e, delay))
        e.loading.add_done_callback(lambda f: _log_failed_load(e.spec.name, f))

    async def supervise(self, interval: float = 1.0) -> None:
        """Watch the loaded models and restart any whose engine died, unless the server is stopping
        (runs until cancelled)."""
        while True:
            await asyncio.sleep(interval)
            for e in self._unique():
                if not self._dead(e):
                    continue
                if not self.stopping:
                    self._restart(e)
                elif not e.left_dead:
                    e.left_dead = True
                    log.warning("%s: its engine stopped while the server is stopping; not loading it again",
                                e.spec.name)  # fmt: skip

    def stop(self) -> None:
        """The server is stopping (its drain began): from now on a dead engine is not loaded again."""
        self.stopping = True

    def describe(self) -> list[dict[str, Any]]:
        """Per-model facts for /admin/models."""
        out = []
        for e in self._unique():
            out.append(
                {
                    "id": e.spec.name,
                    "kind": e.spec.kind,
                    "loaded": e.served is not None,
                    "state": "draining"
                    if e.draining
                    else "stopped"
                    if self._dead(e)
                    else "loading"
                    if e.loading is not None
                    else "loaded"
                    if e.served is not None
                    else "unloaded",
                    "requests_in_flight": e.in_use,
                    "memory_bytes": e.served.memory() if e.served is not None else None,
                    "loads": e.loads,
                    "restarts": e.restarts,
                    "idle_s": round(time.monotonic() - e.last_used, 1) if e.last_used else None,
                }
            )
        return out

    def _first(self) -> list[_Entry]:
        n = len(self._static) if self.max_loaded is None else min(self.max_loaded, len(self._static))
        return [self._entries[name] for name in self._static[:n]]

    def preload_sync(self) -> None:
        """Load the start-up models before the server listens (errors reach the command line)."""
        for e in self._first():
            if e.served is None:
                e.served, e.loads, e.last_used = self._load_fn(e.spec), e.loads + 1, time.monotonic()
                e.memory = e.served.memory()
                log.info("loaded %s (%s)", e.spec.name, _fmt_bytes(e.memory))

    async def preload(self) -> None:
        """Load the start-up models not loaded yet, as many as the limits allow; then ready."""
        for e in self._first():
            await self.load(e.spec.name)
        self.ready = True

    def shutdown(self) -> None:
        """Stop every engine (at server exit; again is harmless)."""
        self.stopping = self._closed = True
        for e in self._unique():
            if e.served is not None:
                e.served.engine.shutdown()
                e.served = None


def _log_failed_load(name: str, f: asyncio.Future[ServedModel]) -> None:
    """A load nobody waited for (a restart) that failed: say so (the next request tries again)."""
    if not f.cancelled() and f.exception() is not None:
        log.error("loading %s again failed: %s", name, f.exception())


def _fmt_bytes(n: int | None) -> str:
    return "memory unknown" if n is None else f"{n / 2**30:.2f} GiB"
