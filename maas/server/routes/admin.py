"""Admin endpoints: which models are loaded (and their memory), load and unload on demand."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from maas.server.deps import Models

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/models", summary="Models known to the pool, loaded or not, with memory")
async def admin_models(models: Models) -> dict[str, Any]:
    """Per-model state, requests in flight and resident memory; the pool's limits."""
    return {
        "object": "list",
        "data": models.describe(),
        "max_loaded_models": models.max_loaded,
        "memory_budget_bytes": models.memory_budget,
    }


@router.post("/models/{name:path}/load", summary="Load a model now")
async def load_model(name: str, models: Models) -> dict[str, Any]:
    """Load `name` (evicting the least recently used idle models if limits require); waits for it."""
    m = await models.load(name)
    return {"id": m.name, "loaded": True, "memory_bytes": m.memory()}


@router.post("/models/{name:path}/unload", summary="Unload a model")
async def unload_model(name: str, models: Models) -> dict[str, Any]:
    """Unload `name` once its in-flight requests finish (new ones wait and reload it)."""
    was = await models.unload(name)
    return {"id": name, "loaded": False, "was_loaded": was}
