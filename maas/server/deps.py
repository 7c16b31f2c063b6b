"""FastAPI dependencies shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from maas.server.pool import ModelPool


async def get_models(request: Request) -> ModelPool:
    """The app's model pool (async: FastAPI would run a plain function in a worker thread)."""
    pool: ModelPool = request.app.state.models
    return pool


Models = Annotated[ModelPool, Depends(get_models)]
