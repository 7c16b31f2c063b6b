"""FastAPI dependencies shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from maas.server.pool import ModelPool


def get_models(request: Request) -> ModelPool:
    """The app's model pool."""
    pool: ModelPool = request.app.state.models
    return pool


Models = Annotated[ModelPool, Depends(get_models)]
