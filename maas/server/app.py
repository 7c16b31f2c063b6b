"""create_app: the FastAPI application over a model pool; start-up models load in its lifespan.

uvicorn --factory maas.server.app:app_from_env   # or, as users do: maas serve
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from maas import __version__
from maas.server.errors import install_error_handlers
from maas.server.pool import ModelPool
from maas.server.routes import admin, chat, completions, embeddings, health, models

log = logging.getLogger("maas.server")


def create_app(pool: ModelPool) -> FastAPI:
    """An app serving `pool`: its start-up models load before /health turns 200; engines stop at exit."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await pool.preload()
        for m in pool.loaded():
            log.info("serving %s (%s)", m.name, m.kind)
        yield
        await asyncio.to_thread(pool.shutdown)

    app = FastAPI(title="maas", version=__version__, lifespan=lifespan)
    app.state.models = pool
    install_error_handlers(app)
    for r in (chat.router, completions.router, embeddings.router, models.router, health.router, admin.router):
        app.include_router(r)
    return app
