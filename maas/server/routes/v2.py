"""The Open Inference Protocol v2 over HTTP (KServe / Triton): health, metadata and infer for tensor
models. A model version is a registry tag: /v2/models/NAME/versions/TAG is NAME:TAG
(/v2/models/NAME is NAME:latest). Errors are `{"error": "..."}`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from maas import __version__
from maas.errors import RequestTimeoutError
from maas.server.deps import Models
from maas.server.pool import ModelPool
from maas.server.serving import client_of
from maas.server.v2_codec import InferRequest, decode_body, decode_request, encode_response

router = APIRouter()


def api_ref(model: str, version: str | None) -> str:
    """The pool name of a v2 model (and version = registry tag)."""
    return model if version in (None, "", "latest") else f"{model}:{version}"


@router.get("/v2", summary="Server metadata (v2)")
async def server_metadata() -> dict[str, Any]:
    """Name, version and protocol extensions."""
    return {"name": "maas", "version": __version__, "extensions": ["binary_tensor_data"]}


@router.get("/v2/health/live", summary="Server liveness (v2)")
async def live() -> dict[str, Any]:
    """200 while the process serves HTTP."""
    return {"live": True}


@router.get("/v2/health/ready", summary="Server readiness (v2)")
async def ready(models: Models) -> Any:
    """200 once the start-up models are loaded and every loaded engine runs; 503 otherwise."""
    ok = server_is_ready(models)
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


def server_is_ready(models: ModelPool) -> bool:
    """True once the start-up models are loaded and every loaded engine runs."""
    return models.ready and all(m.engine.alive for m in models.loaded())


def _versions(models: ModelPool, model: str) -> list[str]:
    out = []
    for spec, _ in models.specs():
        name, _, tag = spec.name.partition(":")
        if name == model and spec.kind == "tensor":
            out.append(tag or "latest")
    return sorted(out)


async def metadata_of(models: ModelPool, model: str, version: str | None) -> dict[str, Any]:
    """A tensor model's v2 metadata (loading it if needed)."""
    lease = await models.acquire(api_ref(model, version), "tensor")
    try:
        eng = lease.model.tensor()
        sig = eng.signature
        meta: dict[str, Any] = {
            "name": model,
            "versions": _versions(models, model) or [version or "latest"],
            "platform": eng.platform,
            "inputs": [t.as_dict() for t in sig.inputs],
            "outputs": [t.as_dict() for t in sig.outputs],
        }
        if sig.labels is not None:
            meta["labels"] = list(sig.labels)
        meta["parameters"] = {"max_batch_size": eng.max_batch_size or 0}
        return meta
    finally:
        lease.release()


@router.get("/v2/models/{model}", summary="Model metadata (v2)")
async def model_metadata(model: str, models: Models) -> dict[str, Any]:
    """Inputs, outputs (names, datatypes, shapes; -1 = any size), platform, class labels."""
    return await metadata_of(models, model, None)


@router.get("/v2/models/{model}/versions/{version}", summary="Model version metadata (v2)")
async def version_metadata(model: str, version: str, models: Models) -> dict[str, Any]:
    """The same for one version (a registry tag)."""
    return await metadata_of(models, model, version)


def model_is_ready(models: ModelPool, model: str, version: str | None) -> bool:
    """True when the tensor model is loaded (ModelNotFoundError when unknown)."""
    spec, loaded = models.spec(api_ref(model, version))
    return loaded and spec.kind == "tensor"


async def _ready(models: Models, model: str, version: str | None) -> Any:
    ok = model_is_ready(models, model, version)
    return JSONResponse({"name": model, "ready": ok}, status_code=200 if ok else 503)


@router.get("/v2/models/{model}/ready", summary="Model readiness (v2)")
async def model_ready(model: str, models: Models) -> Any:
    """200 when the model is loaded; 503 when it is servable but not loaded (it loads on first use)."""
    return await _ready(models, model, None)


@router.get("/v2/models/{model}/versions/{version}/ready", summary="Model version readiness (v2)")
async def version_ready(model: str, version: str, models: Models) -> Any:
    """The same for one version."""
    return await _ready(models, model, version)


@router.post("/v2/models/{model}/infer", summary="Inference (v2)")
async def infer(model: str, request: Request, models: Models) -> Response:
    """Tensors in (JSON or binary), tensors out; concurrent requests share forward passes."""
    return await _infer(model, None, request, models)


@router.post("/v2/models/{model}/versions/{version}/infer", summary="Inference on one version (v2)")
async def infer_version(model: str, version: str, request: Request, models: Models) -> Response:
    """The same for one version (a registry tag)."""
    return await _infer(model, version, request, models)


async def _infer(model: str, version: str | None, request: Request, models: Models) -> Response:
    t0 = time.monotonic()
    name = api_ref(model, version)
    request.state.model = name
    body = decode_body(await request.body(), request.headers.get("content-encoding"))
    req = decode_request(body, request.headers.get("inference-header-content-length"))
    app = request.app
    limiter = app.state.limiter
    if limiter.enabled:
        limiter.admit(client_of(request))
    out = await run_infer(models, name, req, app.state.options.request_timeout_s)
    params = {k: v for k, v in req.parameters.items() if k != "binary_data_output"}
    data, header = encode_response(model, version, out, req, params)
    app.state.metrics.infer_latency.labels(name).observe(time.monotonic() - t0)
    if header is None:
        return Response(data, media_type="application/json")
    return Response(
        data, media_type="application/octet-stream", headers={"Inference-Header-Content-Length": str(header)}
    )


async def run_infer(models: ModelPool, name: str, req: InferRequest, timeout: float) -> dict[str, np.ndarray]:
    """The outputs of one decoded request on the tensor model `name` (RequestTimeoutError past
    `timeout` seconds; 0 = no limit)."""
    lease = await models.acquire(name, "tensor")
    try:
        eng = lease.model.tensor()
        work = eng.infer(req.inputs, req.outputs)
        try:
            return await (asyncio.wait_for(work, timeout) if timeout > 0 else work)
        except TimeoutError:
            raise RequestTimeoutError("the request ran past the server's request timeout") from None
    finally:
        lease.release()
