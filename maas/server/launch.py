"""Build the server's model pool from command-line names and the registry, and run uvicorn."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import uvicorn

from maas.engine.embedding.engine import EmbedOptions
from maas.engine.llm.engine import EngineConfig
from maas.engine.protocol import EmbeddingClient, LLMClient, TensorClient
from maas.engine.tensor.engine import TensorOptions
from maas.errors import MaasError, UnsupportedModelError
from maas.models.families import kind_of
from maas.server.app import create_app
from maas.server.middleware import Gateway
from maas.server.pool import ModelPool
from maas.server.state import ModelSpec, ServedModel
from maas.store.locate import Located, api_name, local_path, locate, locate_named

log = logging.getLogger("maas.server")


def _estimate(size: int) -> int:
    """Bytes a model is expected to take once loaded, before it has been measured."""
    return 2 * size + (400 << 20)  # weights unpacked to 8 bits or more, plus a process and its cache


def spec_for(found: Located, served_name: str | None = None) -> ModelSpec:
    """A servable model from a located one."""
    return ModelSpec(served_name or found.name, found.kind, found.origin, found.source, _estimate(found.size))


class ModelLoader:
    """Loads specs into served models (engines in their own processes); knows the registry."""

    def __init__(
        self, config: EngineConfig, embed: EmbedOptions | None = None, tensor: TensorOptions | None = None
    ):
        self.config = config
        self.embed = embed or EmbedOptions()
        self.tensor = tensor or TensorOptions()
        self._registry: Any = None

    def registry(self) -> Any:
        """The registry, opened once."""
        if self._registry is None:
            from maas.store.registry import Registry

            self._registry = Registry()
        return self._registry

    def __call__(self, spec: ModelSpec) -> ServedModel:
        found = Located(spec.name, spec.kind, spec.origin, spec.source, 0)
        path = local_path(found, self.registry() if spec.origin == "registry" else None)
        if spec.kind == "llm":
            from maas.engine.llm.process_engine import ProcessEngine

            llm: LLMClient = ProcessEngine(path, self.config)  # typed: mypy checks each contract
            return ServedModel(spec.name, "llm", llm)
        if spec.kind == "embedding":
            from maas.engine.embedding.engine import EmbeddingEngine

            emb: EmbeddingClient = EmbeddingEngine.from_path(
                str(path), self.embed, self.config.threads, self.config.device
            )
            return ServedModel(spec.name, "embedding", emb)
        if spec.kind == "tensor":
            from maas.engine.tensor.engine import TensorEngine

            o = replace(self.tensor, threads=self.config.threads, device=self.config.device)
            tensor: TensorClient = TensorEngine.from_path(str(path), o)
            return ServedModel(spec.name, "tensor", tensor)
        raise UnsupportedModelError(
            f"model {spec.name!r} is a {spec.kind} model, which this server cannot serve"
        )

    def lookup(self, name: str) -> ModelSpec | None:
        """A model a request names that was not given at start-up: the registry's or a built-in."""
        try:
            found = locate_named(name, self.registry())
        except MaasError:
            return None
        return spec_for(found) if found is not None else None

    def catalog(self) -> list[ModelSpec]:
        """Every model in the registry, as servable specs."""
        try:
            infos = self.registry().list_models()
        except Exception as e:  # the catalog is optional for serving: log and list none
            log.warning("cannot read the registry: %s", e)
            return []
        return [
            ModelSpec(
                api_name(i.name, i.tag), kind_of(i.family), "registry", f"{i.name}:{i.tag}", _estimate(i.size)
            )
            for i in infos
        ]


def build_pool(
    names: list[str],
    config: EngineConfig,
    served_name: str | None = None,
    max_loaded: int | None = None,
    memory_budget: int | None = None,
    use_registry: bool = True,
    embed: EmbedOptions | None = None,
    tensor: TensorOptions | None = None,
) -> ModelPool:
    """A pool of the named models (checked now: a bad name fails before the server starts)."""
    loader = ModelLoader(config, embed, tensor)
    specs = [spec_for(locate(n), served_name if len(names) == 1 else None) for n in names]
    if max_loaded is None:
        max_loaded = max(3, len(specs))
    return ModelPool(
        specs,
        loader,
        max_loaded=max_loaded,
        memory_budget=memory_budget,
        lookup=loader.lookup if use_registry else None,
        catalog=loader.catalog if use_registry else None,
    )


class DrainingServer(uvicorn.Server):
    """uvicorn, with a graceful first SIGTERM/SIGINT, whoever sent it (a supervisor signalling the whole
    process group included: engine processes ignore it): new requests get 503 (and /health turns 503)
    while the running ones finish, up to `drain_s`; then the server exits 0. A second signal stops now,
    cutting what still runs: exit status 128 + the signal (143 for SIGTERM, 130 for SIGINT)."""

    def __init__(
        self,
        config: uvicorn.Config,
        gateway: Gateway,
        drain_s: float,
        on_stop: Callable[[], None] | None = None,
    ):
        super().__init__(config)
        self.gateway, self.drain_s, self.on_stop = gateway, drain_s, on_stop
        self.forced_by: int | None = None  # the second signal, when one came

    @property
    def exit_code(self) -> int:
        """0 after a drain (or a drain that timed out), 128 + signal when a second signal cut it short."""
        return 0 if self.forced_by is None else 128 + self.forced_by

    def handle_exit(self, sig: int, frame: Any) -> None:
        # Not uvicorn's: it would raise the signal again after shutdown and the process would die of it.
        if self.gateway.draining:
            self.forced_by = sig
            log.warning("signal %d again: stopping now, %d request(s) cut off", sig, self.gateway.in_flight)
            logging.getLogger("uvicorn.error").addFilter(_not_cancelled)
            self.should_exit = self.force_exit = True
            return
        self.gateway.draining = True
        if self.on_stop is not None:
            self.on_stop()
        if self.drain_s <= 0:
            self.should_exit = True
            return
        log.info("signal %d: draining %d request(s) (up to %.0f s; again to stop now)", sig,
                 self.gateway.in_flight, self.drain_s)  # fmt: skip
        threading.Thread(target=self._drain, name="maas-drain", daemon=True).start()

    def _drain(self) -> None:
        deadline = time.monotonic() + self.drain_s
        while self.gateway.in_flight > 0 and time.monotonic() < deadline and not self.force_exit:
            time.sleep(0.05)
        if self.force_exit:
            return
        if self.gateway.in_flight:
            log.warning("drain timeout: %d request(s) cut off", self.gateway.in_flight)
        else:
            log.info("drained; stopping")
        self.should_exit = True


def _not_cancelled(record: logging.LogRecord) -> bool:
    """False for uvicorn's traceback of a task cancelled by a forced stop (each request cut off has one)."""
    exc = record.exc_info[1] if record.exc_info else None
    text = str(record.msg).rstrip()  # starlette hands the lifespan's traceback over as text
    return not isinstance(exc, asyncio.CancelledError) and not text.endswith("CancelledError")


def serve(
    pool: ModelPool, host: str, port: int, log_level: str = "info", options: Any = None, drain_s: float = 30.0
) -> int:
    """Serve the pool's models until a signal (graceful drain first, see DrainingServer); returns the
    exit status, after every engine has stopped."""
    app = create_app(pool, options)
    log.info("listening on http://%s:%d (docs at /docs)", host, port)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    server = DrainingServer(config, app, drain_s, on_stop=pool.stop)
    try:
        server.run()
    finally:
        pool.shutdown()  # done by the app's shutdown already, unless a second signal skipped it
    return server.exit_code
