"""The Open Inference Protocol v2 over HTTP (KServe / Triton): health and metadata for tensor models,
and the infer call both transports share (`run_infer`; HTTP's infer endpoint is server/v2_infer.py). A model version is a registry tag: /v2/models/NAME/versions/TAG is NAME:TAG
(/v2/models/NAME is NAME:latest). Errors are `{"error": "..."}`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from maas import __version__
from maas.engine.protocol import TensorClient
from maas.errors import RequestTimeoutError
from maas.server.deps import Models
from maas.server.pool import ModelPool
from maas.server.ratelimit import RateLimiter
from maas.server.v2_codec import InferRequest, timeout_s

router = APIRouter()


def api_ref(model: str, version: str | None) -> str:
    """The pool name of a v2 model (and version = registry tag)."""
    return model if version in (None, "", "latest") else f"{model}:{version}"


@router.get("/v2", summary="Server metadata (v2)")
async def server_metadata() -> dict[str, Any]:
    """Name, version and protocol extensions."""
    return {
        "name": "maas",
        "version": __version__,
        "extensions": ["binary_tensor_data", "model_configuration"],
    }


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


@contextlib.asynccontextmanager
async def tensor_engine(models: ModelPool, name: str) -> AsyncIterator[TensorClient]:
    """The tensor model `name`'s engine, leased (loaded if needed) for the block."""
    lease = await models.acquire(name, "tensor")
    try:
        yield lease.model.tensor()
    finally:
        lease.release()


async def metadata_of(models: ModelPool, model: str, version: str | None) -> dict[str, Any]:
    """A tensor model's v2 metadata (loading it if needed)."""
    async with tensor_engine(models, api_ref(model, version)) as eng:
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


async def config_of(models: ModelPool, model: str, version: str | None) -> dict[str, Any]:
    """Triton's model configuration (its `model_configuration` extension, what
    tritonclient's get_model_config reads): dims without the batch axis when batching."""
    async with tensor_engine(models, api_ref(model, version)) as eng:
        batched = eng.max_batch_size is not None

        def tensors(specs: Any) -> list[dict[str, Any]]:
            return [{"name": t.name, "data_type": "TYPE_STRING" if t.datatype == "BYTES" else f"TYPE_{t.datatype}",
                     "dims": list(t.shape[1:] if batched else t.shape)} for t in specs]  # fmt: skip

        o = eng.options
        config: dict[str, Any] = {
            "name": model,
            "platform": eng.platform,
            "backend": "onnxruntime" if eng.platform == "onnxruntime_onnx" else "pytorch",
            "max_batch_size": eng.max_batch_size or 0,
            "input": tensors(eng.signature.inputs),
            "output": tensors(eng.signature.outputs),
        }
        if batched:
            config["dynamic_batching"] = {
                "max_queue_delay_microseconds": int(o.max_wait_ms * 1000),
                "preferred_batch_size": list(o.preferred),
                "default_queue_policy": {"max_queue_size": o.max_queue},
            }
        return config


@router.get("/v2/models/{model}/config", summary="Model configuration (Triton's extension)")
async def model_config(model: str, models: Models) -> dict[str, Any]:
    """Triton-style configuration: max_batch_size, inputs and outputs (dims without the batch axis), dynamic batching."""
    return await config_of(models, model, None)


@router.get("/v2/models/{model}/versions/{version}/config", summary="Model version configuration")
async def version_config(model: str, version: str, models: Models) -> dict[str, Any]:
    """The same for one version."""
    return await config_of(models, model, version)


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


async def run_infer(
    models: ModelPool, name: str, req: InferRequest, options: Any, limiter: RateLimiter, client: str
) -> dict[str, np.ndarray]:
    """The outputs of one decoded request on the tensor model `name`, for both transports: the
    client's rate limit, then the model, within the request's `timeout` parameter or the server's
    request timeout (RequestTimeoutError past it)."""
    if limiter.enabled:
        limiter.admit(client)
    timeout = timeout_s(req.parameters, options.request_timeout_s)
    async with tensor_engine(models, name) as eng:
        work = eng.infer(req.inputs, req.outputs)
        try:
            return await (asyncio.wait_for(work, timeout) if timeout > 0 else work)
        except TimeoutError:
            raise RequestTimeoutError("the request ran past the server's request timeout") from None
