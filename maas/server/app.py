"""create_app: the FastAPI application over a model pool; start-up models load in its lifespan.

uvicorn --factory maas.server.app:app_from_env   # or, as users do: maas serve
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI

from maas import __version__
from maas.server.auth import KeyRing
from maas.server.caller import Callers
from maas.server.errors import install_error_handlers
from maas.server.metrics import Metrics
from maas.server.middleware import Gateway
from maas.server.pool import ModelPool
from maas.server.ratelimit import RateLimiter
from maas.server.routes import admin, chat, completions, embeddings, health, models, tokenize
from maas.server.state import ServedModel
from maas.server.v2 import http as v2_http
from maas.server.v2.dataplane import DataPlane

log = logging.getLogger("maas.server")


@dataclass(frozen=True)
class ServerOptions:
    """What the HTTP layer enforces."""

    keys: KeyRing = field(default_factory=KeyRing)
    max_body_bytes: int = 32 << 20
    max_queued_requests: int = 512  # per model, beyond its running batch; more -> 429
    json_access_log: bool = False
    requests_per_min: int = 0  # per API key (or client address without keys); 0 = no limit
    tokens_per_min: int = 0
    request_timeout_s: float = 0.0  # 0 = none; longer requests are aborted (504)
    grpc_port: int = 0  # the Open Inference Protocol v2 over gRPC; 0 = off
    grpc_host: str = "127.0.0.1"
    tool_parser: str = "auto"  # how tool calls are read from LLM output; auto = from the chat template


def create_app(pool: ModelPool, options: ServerOptions | None = None) -> Gateway:
    """An ASGI app serving `pool`: start-up models load before /health turns 200; engines stop at exit."""
    opts = options or ServerOptions()
    metrics = Metrics(lambda: [(m.name, m.kind, m.engine) for m in pool.loaded()])

    def attach(m: ServedModel) -> None:
        hook = metrics.batch_hook(m.name, m.kind)
        if m.kind == "embedding":
            m.embedding().on_batch = hook
        elif m.kind == "tensor":
            m.tensor().on_batch = hook

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        grpc_server = None
        try:
            if opts.grpc_port:  # bound first: a port in use fails before any model loads
                from maas.server.v2.grpc import start_grpc  # grpc loads only when asked for

                grpc_server = await start_grpc(
                    plane, callers, opts.grpc_host, opts.grpc_port, opts.max_body_bytes, gateway
                )
            await pool.preload()
            supervisor = asyncio.ensure_future(pool.supervise())  # dead engines come back
            gc.freeze()  # start-up objects (models, modules) leave the collector's scans: shorter GC pauses
            for m in pool.loaded():
                attach(m)
                log.info("serving %s (%s)", m.name, m.kind)
            yield
            supervisor.cancel()
        finally:
            try:
                if grpc_server is not None:
                    await grpc_server.stop(grace=2.0)
            finally:
                await asyncio.to_thread(pool.shutdown)

    pool.on_load = attach
    pool.on_restart = lambda name: metrics.engine_restarts.labels(name).inc()
    app = FastAPI(title="maas", version=__version__, lifespan=lifespan)
    app.state.models = pool
    app.state.metrics = metrics
    app.state.options = opts
    app.state.in_flight = {}  # id(engine) -> admitted requests (serving._admit)
    callers = Callers(opts.keys, RateLimiter(opts.requests_per_min, opts.tokens_per_min), metrics)
    app.state.callers = callers  # keys, rate limits and accounting: HTTP and gRPC alike
    plane = DataPlane(pool, opts.request_timeout_s)
    app.state.dataplane = plane  # the Open Inference Protocol's calls (v2/http.py, v2/grpc.py)
    install_error_handlers(app)
    routers = (chat.router, completions.router, embeddings.router, models.router, tokenize.router, health.router,
               admin.router, v2_http.router)  # fmt: skip
    for r in routers:
        app.include_router(r)
    gateway = Gateway(app, callers, opts.max_body_bytes, opts.json_access_log)
    return gateway  # the gRPC server shares its drain
