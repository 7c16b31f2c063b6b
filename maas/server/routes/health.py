"""GET /health."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from maas.server.deps import Models

router = APIRouter()


@router.get("/health", summary="Liveness and readiness")
async def health(models: Models) -> Any:
    """200 once the start-up models are loaded and every loaded engine runs; 503 otherwise."""
    if not models.ready:
        return JSONResponse({"status": "loading"}, status_code=503)
    loaded = models.loaded()
    stats = {m.name: m.engine.stats() for m in loaded}
    if not all(m.engine.alive for m in loaded):
        return JSONResponse({"status": "engine stopped", "models": stats}, status_code=503)
    return {"status": "ok", "models": stats}
