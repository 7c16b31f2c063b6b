"""GET /v1/models: every servable model, loaded or not."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from maas.server.deps import Models
from maas.server.state import ModelSpec

router = APIRouter()


def _card(spec: ModelSpec, loaded: bool, created: int) -> dict[str, Any]:
    return {
        "id": spec.name,
        "object": "model",
        "created": created,
        "owned_by": "maas",
        "kind": spec.kind,
        "loaded": loaded,
    }


@router.get("/v1/models", summary="List servable models")
async def list_models(models: Models) -> dict[str, Any]:
    """The models this server answers for; `loaded` says which are in memory now."""
    served = {m.name: m for m in models.loaded()}
    data = []
    for spec, loaded in models.specs():
        card = _card(spec, loaded, served[spec.name].created if spec.name in served else 0)
        m = served.get(spec.name)
        if m is not None and m.kind in ("llm", "embedding"):
            card["max_model_len"] = m.llm().max_model_len if m.kind == "llm" else m.embedding().max_model_len
        data.append(card)
    return {"object": "list", "data": data}


@router.get("/v1/models/{name:path}", summary="Describe one model")
async def get_model(name: str, models: Models) -> dict[str, Any]:
    """One model's card (404 when unknown)."""
    spec, loaded = models.spec(name)
    return _card(spec, loaded, 0)
