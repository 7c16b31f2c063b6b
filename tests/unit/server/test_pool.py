"""ModelPool with a fake loader: LRU order, limits, leases that block eviction, failed loads."""

from __future__ import annotations

import asyncio

import pytest

from maas.errors import InvalidRequestError, ModelFormatError, ModelNotFoundError
from maas.server.pool import ModelPool
from maas.server.state import ModelSpec, ServedModel


class FakeEngine:
    def __init__(self, name: str, memory: int):
        self.name, self.mem, self.stopped, self.died = name, memory, False, False

    @property
    def alive(self) -> bool:
        return not (self.stopped or self.died)

    def memory_bytes(self) -> int:
        return self.mem

    def shutdown(self) -> None:
        self.stopped = True


class Loader:
    def __init__(self, memory: dict[str, int] | None = None, fail: set[str] | None = None):
        self.loads: list[str] = []
        self.memory = memory or {}
        self.fail = fail or set()

    def __call__(self, spec: ModelSpec) -> ServedModel:
        if spec.name in self.fail:
            raise ModelFormatError(f"{spec.name} is corrupt")
        self.loads.append(spec.name)
        return ServedModel(spec.name, spec.kind, FakeEngine(spec.name, self.memory.get(spec.name, 100)))


def specs(*names: str, kind: str = "llm") -> list[ModelSpec]:
    return [ModelSpec(n, kind, "path", f"/m/{n}", estimate=100) for n in names]


def loaded(pool: ModelPool) -> list[str]:
    return sorted(m.name for m in pool.loaded())


def test_lru_eviction_with_max_loaded():
    async def main() -> None:
        loader = Loader()
        pool = ModelPool(specs("a", "b", "c"), loader, max_loaded=2)
        await pool.preload()
        assert loaded(pool) == ["a", "b"]
        (await pool.acquire("a")).release()  # a is now the most recently used
        (await pool.acquire("c")).release()  # evicts b, the least recently used
        assert loaded(pool) == ["a", "c"]
        assert loader.loads == ["a", "b", "c"]

    asyncio.run(main())


def test_a_held_model_is_not_evicted_until_released():
    async def main() -> None:
        pool = ModelPool(specs("a", "b"), Loader(), max_loaded=1)
        await pool.preload()
        lease = await pool.acquire("a")
        waiting = asyncio.ensure_future(pool.acquire("b"))
        await asyncio.sleep(0.05)
        assert not waiting.done() and loaded(pool) == ["a"]
        assert {m["id"]: m["state"] for m in pool.describe()}["a"] == "draining"
        late = asyncio.ensure_future(pool.acquire("a"))  # new requests for a draining model wait
        await asyncio.sleep(0.05)
        assert not late.done()
        lease.release()
        b = await waiting
        assert b.model.name == "b" and loaded(pool) == ["b"]
        assert lease.model.engine.stopped
        b.release()
        a2 = await late  # reloaded after b finished
        assert a2.model.name == "a" and loaded(pool) == ["a"]
        a2.release()

    asyncio.run(main())


def test_memory_budget_evicts_to_fit():
    async def main() -> None:
        loader = Loader(memory={"a": 600, "b": 300, "c": 500})
        pool = ModelPool(specs("a", "b", "c"), loader, memory_budget=1000)
        await pool.preload()  # c was estimated at 100 but measured 500: a, least recently used, goes
        assert loaded(pool) == ["b", "c"]
        (await pool.acquire("a")).release()  # a is known to need 600: b and c go
        assert loaded(pool) == ["a"]
        (await pool.acquire("b")).release()  # 600 + 300 fit
        assert loaded(pool) == ["a", "b"]

    asyncio.run(main())


def test_unknown_wrong_kind_and_failed_load():
    async def main() -> None:
        pool = ModelPool(specs("a", "bad"), Loader(fail={"bad"}), max_loaded=3)
        with pytest.raises(ModelNotFoundError, match="'zzz' does not exist"):
            await pool.acquire("zzz")
        with pytest.raises(InvalidRequestError, match="not a embedding model"):
            await pool.acquire("a", kind="embedding")
        with pytest.raises(ModelFormatError, match="corrupt"):
            await pool.acquire("bad")
        assert {m["id"]: m["requests_in_flight"] for m in pool.describe()}["bad"] == 0

    asyncio.run(main())


def test_registry_lookup_aliases_one_entry():
    async def main() -> None:
        loader = Loader()

        def lookup(name: str) -> ModelSpec | None:
            return specs("reg")[0] if name in ("reg", "reg:latest") else None

        pool = ModelPool(specs("a"), loader, lookup=lookup)
        (await pool.acquire("reg:latest")).release()
        (await pool.acquire("reg")).release()
        assert loader.loads == ["reg"]  # one model, two names
        assert [s.name for s, _ in pool.specs()] == ["a", "reg"]

    asyncio.run(main())


def test_unload_waits_for_requests():
    async def main() -> None:
        pool = ModelPool(specs("a"), Loader())
        await pool.preload()
        lease = await pool.acquire("a")
        task = asyncio.ensure_future(pool.unload("a"))
        await asyncio.sleep(0.05)
        assert not task.done()
        lease.release()
        assert await task is True and loaded(pool) == []
        assert await pool.unload("a") is False

    asyncio.run(main())


def test_a_model_whose_engine_died_is_loaded_again_with_a_backoff_when_it_keeps_dying(monkeypatch):
    import maas.server.pool as pool_mod

    async def main() -> None:
        loader = Loader()
        pool = ModelPool(specs("a"), loader)
        restarted: list[str] = []
        pool.on_restart = restarted.append
        await pool.preload()
        first = (await pool.acquire("a")).model
        first.engine.died = True  # the engine process exited
        assert {m["id"]: m["state"] for m in pool.describe()}["a"] == "stopped"
        lease = await pool.acquire("a")  # the next request: loaded again, served
        assert lease.model is not first and lease.model.engine.alive and first.engine.stopped
        lease.release()
        assert restarted == ["a"] and loader.loads == ["a", "a"]
        delays: list[float] = []
        real_sleep = asyncio.sleep

        async def sleep(d: float) -> None:
            delays.append(d)
            await real_sleep(0)

        monkeypatch.setattr(pool_mod.asyncio, "sleep", sleep)
        for _ in range(3):  # dying again soon after each load: 1, 2, 4 s before the next load
            pool.loaded()[0].engine.died = True
            (await pool.acquire("a")).release()
        assert delays == [1.0, 2.0, 4.0] and {m["id"]: m["restarts"] for m in pool.describe()}["a"] == 4
        watch = asyncio.ensure_future(pool.supervise(interval=0.0))  # the watchdog, without a request
        pool.loaded()[0].engine.died = True
        for _ in range(5000):  # until the watchdog has loaded it again (the load runs in a thread)
            if len(restarted) == 5 and pool.loaded():
                break
            await real_sleep(0 if _ < 20 else 0.001)
        watch.cancel()
        assert len(restarted) == 5 and pool.loaded() and pool.loaded()[0].engine.alive

    asyncio.run(main())


def test_an_engine_that_dies_while_the_server_stops_is_not_loaded_again(caplog):
    async def main() -> None:
        loader = Loader()
        pool = ModelPool(specs("a"), loader)
        await pool.preload()
        pool.stop()  # the server's drain began
        pool.loaded()[0].engine.died = True
        watch = asyncio.ensure_future(pool.supervise(interval=0.0))
        for _ in range(50):
            await asyncio.sleep(0)
        watch.cancel()
        lease = await pool.acquire(
            "a"
        )  # a request admitted before the drain: the dead engine (a 503), no load
        assert not lease.model.engine.alive
        lease.release()
        assert loader.loads == ["a"] and {m["id"]: m["restarts"] for m in pool.describe()}["a"] == 0
        pool.shutdown()

    with caplog.at_level("WARNING", logger="maas.server"):
        asyncio.run(main())
    said = [r.getMessage() for r in caplog.records if "not loading it again" in r.getMessage()]
    assert len(said) == 1  # once, not on every watch
