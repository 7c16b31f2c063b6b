"""GET /health."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

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


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=True)
async def metrics(request: Request) -> Response:
    """Counters, gauges and histograms in Prometheus' text format (maas:* names, model label)."""
    return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
