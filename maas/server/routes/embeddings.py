"""POST /v1/embeddings."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
from fastapi import APIRouter
from fastapi.responses import Response

from maas.errors import InvalidRequestError
from maas.server.deps import Models
from maas.server.json import dumps
from maas.server.protocol import EmbeddingRequest

router = APIRouter()


@router.post("/v1/embeddings", summary="Sentence embeddings (OpenAI-compatible)")
async def embeddings(body: EmbeddingRequest, models: Models) -> Any:
    """Vectors for a string, a list of strings, or token ids; float lists or base64 float32."""
    texts, ids = body.texts_or_ids()
    lease = await models.acquire(body.model, "embedding")
    try:
        eng = lease.model.embedding()
        dims = body.dimensions
        if dims is not None and not 1 <= dims <= eng.dim:
            raise InvalidRequestError(
                f"dimensions must be between 1 and {eng.dim} for this model", param="dimensions"
            )
        if texts is not None:
            tokenize = eng.embedder.tokenize
            seqs = (
                tokenize(texts, body.truncate)
                if len(texts) <= 32
                else await asyncio.to_thread(tokenize, texts, body.truncate)
            )
        else:
            seqs = [eng.embedder.fit(s, body.truncate) for s in ids or []]
        vectors: np.ndarray = await eng.embed(seqs, dims)
    finally:
        lease.release()
    if body.encoding_format == "base64":
        data: list[Any] = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in vectors]
    else:
        data = vectors.tolist()
    n_tokens = sum(len(s) for s in seqs)
    payload = {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(data)],
        "model": lease.model.name,
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
    }
    return Response(dumps(payload), media_type="application/json")
