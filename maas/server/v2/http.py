"""The Open Inference Protocol v2 over HTTP (KServe / Triton): a FastAPI router for health, metadata
and configuration, and POST /v2/models/{m}[/versions/{v}]/infer as a plain ASGI handler; both thin
adapters over the DataPlane (app.state.dataplane). Errors are `{"error": "..."}`.

The infer handler is the hot path of tensor serving: the Gateway hands those requests straight
here, skipping FastAPI's routing, dependency solving and response classes (on a small model that
machinery costs more CPU than the forward pass). Keys, body limit, drain and access metrics are the
Gateway's, as for every route.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.exceptions import HTTPException
from starlette.types import Receive

from maas.errors import MaasError, OverloadedError
from maas.server.caller import Caller, Callers
from maas.server.errors import status_of
from maas.server.v2.codec import decode_body, decode_request, encode_response
from maas.server.v2.dataplane import DataPlane, ModelConfig, ModelMetadata, ServerMetadata, pool_name

log = logging.getLogger("maas.server")

router = APIRouter()


async def get_dataplane(request: Request) -> DataPlane:
    """The app's v2 data plane."""
    plane: DataPlane = request.app.state.dataplane
    return plane


Plane = Annotated[DataPlane, Depends(get_dataplane)]


def _status(ok: bool) -> int:
    return 200 if ok else 503


@router.get("/v2", summary="Server metadata (v2)", response_model=None)
async def server_metadata(plane: Plane) -> ServerMetadata:
    """Name, version and protocol extensions."""
    return plane.server_metadata()


@router.get("/v2/health/live", summary="Server liveness (v2)", response_model=None)
async def live(plane: Plane) -> dict[str, bool]:
    """200 while the process serves HTTP."""
    return {"live": plane.live()}


@router.get("/v2/health/ready", summary="Server readiness (v2)")
async def ready(plane: Plane) -> JSONResponse:
    """200 once the start-up models are loaded and every loaded engine runs; 503 otherwise."""
    ok = plane.ready()
    return JSONResponse({"ready": ok}, status_code=_status(ok))


@router.get(
    "/v2/models/{model}/config", summary="Model configuration (Triton's extension)", response_model=None
)
async def model_config(model: str, plane: Plane) -> ModelConfig:
    """Triton-style configuration: max_batch_size, inputs and outputs (dims without the batch axis), dynamic batching."""
    return await plane.model_config(model)


@router.get("/v2/models/{model}/versions/{version}/config", summary="Model version configuration",
            response_model=None)  # fmt: skip
async def version_config(model: str, version: str, plane: Plane) -> ModelConfig:
    """The same for one version."""
    return await plane.model_config(model, version)


@router.get("/v2/models/{model}", summary="Model metadata (v2)", response_model=None)
async def model_metadata(model: str, plane: Plane) -> ModelMetadata:
    """Inputs, outputs (names, datatypes, shapes; -1 = any size), platform, class labels."""
    return await plane.model_metadata(model)


@router.get(
    "/v2/models/{model}/versions/{version}", summary="Model version metadata (v2)", response_model=None
)
async def version_metadata(model: str, version: str, plane: Plane) -> ModelMetadata:
    """The same for one version (a registry tag)."""
    return await plane.model_metadata(model, version)


@router.get("/v2/models/{model}/ready", summary="Model readiness (v2)")
async def model_ready(model: str, plane: Plane) -> JSONResponse:
    """200 when the model is loaded; 503 when it is servable but not loaded (it loads on first use)."""
    ok = plane.model_ready(model)
    return JSONResponse({"name": model, "ready": ok}, status_code=_status(ok))


@router.get("/v2/models/{model}/versions/{version}/ready", summary="Model version readiness (v2)")
async def version_ready(model: str, version: str, plane: Plane) -> JSONResponse:
    """The same for one version."""
    ok = plane.model_ready(model, version)
    return JSONResponse({"name": model, "ready": ok}, status_code=_status(ok))


# -- infer, without FastAPI -----------------------------------------------------------------------

INFER_ROUTE = "/v2/models/{model}/infer"
_INFER_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")

Scope = MutableMapping[str, Any]


def match_infer(method: str, path: str) -> tuple[str, str | None] | None:
    """(model, version) when this is an infer request."""
    m = _INFER_PATH.match(path) if method == "POST" else None
    return (m.group(1), m.group(2)) if m else None


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HTTPException(499, "client disconnected")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


Answer = tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]  # status, body, content type, headers


async def _answer(state: State, scope: Scope, receive: Receive, headers: dict[str, str],
                  model: str, version: str | None) -> Answer:  # fmt: skip
    """Decode, admit, infer and encode one request; maas errors become v2's `{"error": message}`."""
    t0 = time.monotonic()
    name = pool_name(model, version)
    plane: DataPlane = state.dataplane
    callers: Callers = state.callers
    try:
        body = decode_body(
            await _body(receive), headers.get("content-encoding"), state.options.max_body_bytes
        )
        req = decode_request(body, headers.get("inference-header-content-length"))
        callers.admit(Caller.of_scope(scope))
        out = await plane.infer(model, version, req)
        data, header = encode_response(model, version, out, req, req.echo_parameters)
        callers.served(name, time.monotonic() - t0)
    except HTTPException as e:  # the Gateway's body limit (413) or a client gone
        return e.status_code, orjson.dumps({"error": str(e.detail)}), b"application/json", []
    except MaasError as e:
        callers.rejected(name, e)
        extra = [(b"retry-after", b"1")] if isinstance(e, OverloadedError) else []
        return status_of(e), orjson.dumps({"error": e.message}), b"application/json", extra
    if header is None:
        return 200, data, b"application/json", []
    return (
        200,
        data,
        b"application/octet-stream",
        [(b"inference-header-content-length", str(header).encode())],
    )


async def infer(app: Starlette, scope: Scope, receive: Receive, send: Callable[[dict[str, Any]], Awaitable[None]],
                headers: dict[str, str], model: str, version: str | None) -> None:  # fmt: skip
    """Answer one infer request (`app` is the FastAPI app: its state holds the data plane, the
    callers and the options)."""
    scope["state"]["model"] = pool_name(model, version)
    try:
        status, data, kind, extra = await _answer(app.state, scope, receive, headers, model, version)
    except Exception:
        log.exception("unhandled error in v2 infer")
        status, data, kind, extra = (
            500,
            orjson.dumps({"error": "internal server error"}),
            b"application/json",
            [],
        )
    hdrs = [(b"content-type", kind), (b"content-length", str(len(data)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": data})
