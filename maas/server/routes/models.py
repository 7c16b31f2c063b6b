"""GET /v1/models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from maas.server.deps import Models

router = APIRouter()


@router.get("/v1/models", summary="List served models")
async def list_models(models: Models) -> dict[str, Any]:
    """The models this server answers for."""
    return {
        "object": "list",
        "data": [
            {
                "id": m.name,
                "object": "model",
                "created": m.created,
                "owned_by": m.owned_by,
                "max_model_len": m.engine.max_model_len,
            }
            for m in models.models.values()
        ],
    }


@router.get("/v1/models/{name:path}", summary="Describe one model")
async def get_model(name: str, models: Models) -> dict[str, Any]:
    """One model's card (404 when unknown)."""
    m = models.get(name, kind=None)
    return {"id": m.name, "object": "model", "created": m.created, "owned_by": m.owned_by}
