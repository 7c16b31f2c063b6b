"""GET /health."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from maas.server.deps import Models

router = APIRouter()


@router.get("/health", summary="Liveness and readiness")
async def health(models: Models) -> Any:
    """200 when every model is loaded and its engine runs; 503 otherwise."""
    if not models.models:
        return JSONResponse({"status": "loading"}, status_code=503)
    stats = {name: m.engine.stats() for name, m in models.models.items()}
    if not all(m.engine.alive for m in models.models.values()):
        return JSONResponse({"status": "engine stopped", "models": stats}, status_code=503)
    return {"status": "ok", "models": stats}
