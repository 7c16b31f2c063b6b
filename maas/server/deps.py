"""FastAPI dependencies shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from maas.server.state import ModelTable


def get_models(request: Request) -> ModelTable:
    """The app's model table."""
    table: ModelTable = request.app.state.models
    return table


Models = Annotated[ModelTable, Depends(get_models)]
