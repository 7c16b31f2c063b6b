"""create_app: the FastAPI application, with models loaded in its lifespan.

uvicorn --factory maas.server.app:app_from_env   # or, as users do: maas serve
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from maas import __version__
from maas.server.errors import install_error_handlers
from maas.server.routes import chat, completions, health, models
from maas.server.state import ModelTable, ServedModel

log = logging.getLogger("maas.server")

Loader = Callable[[], list[ServedModel]]


def create_app(load: Loader) -> FastAPI:
    """An app that runs `load` (in a worker thread) at start-up and shuts engines down at exit."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for m in await asyncio.to_thread(load):
            app.state.models.add(m)
            log.info("serving %s (%s)", m.name, m.kind)
        yield
        for m in app.state.models.models.values():
            m.engine.shutdown()

    app = FastAPI(title="maas", version=__version__, lifespan=lifespan)
    app.state.models = ModelTable()
    install_error_handlers(app)
    for r in (chat.router, completions.router, models.router, health.router):
        app.include_router(r)
    return app
