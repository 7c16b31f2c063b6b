"""Map errors to OpenAI-style JSON bodies with the right HTTP status."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from maas.errors import (
    EngineDeadError,
    InvalidRequestError,
    MaasError,
    ModelNotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    RequestTimeoutError,
)

log = logging.getLogger("maas.server")


def error_body(
    message: str, kind: str, param: str | None = None, code: str | int | None = None
) -> dict[str, Any]:
    """The OpenAI error envelope."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def status_of(e: MaasError) -> int:
    """HTTP status for a maas error."""
    if isinstance(e, ModelNotFoundError):
        return 404
    if isinstance(e, PayloadTooLargeError):
        return 413
    if isinstance(e, InvalidRequestError):
        return 400
    if isinstance(e, OverloadedError):
        return 429
    if isinstance(e, EngineDeadError):
        return 503
    if isinstance(e, RequestTimeoutError):
        return 504
    return 500


def is_v2(path: str) -> bool:
    """True for the Open Inference Protocol's paths, whose errors are `{"error": message}`."""
    return path == "/v2" or path.startswith("/v2/")


def error_response(e: MaasError, v2: bool = False) -> JSONResponse:
    """A JSONResponse for a maas error (429s carry Retry-After), in the OpenAI or the v2 shape."""
    headers = {"Retry-After": "1"} if isinstance(e, OverloadedError) else None
    body = {"error": e.message} if v2 else error_body(e.message, e.kind, e.param, e.code)
    return JSONResponse(body, status_code=status_of(e), headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errs = exc.errors()
    if not errs:
        return "invalid request", None
    e = errs[0]
    loc = [str(p) for p in e.get("loc", ()) if p != "body"]
    if e.get("type") == "json_invalid":
        return f"the request body is not valid JSON: {e.get('ctx', {}).get('error', e.get('msg'))}", None
    param = ".".join(loc) or None
    more = f" (and {len(errs) - 1} more problems)" if len(errs) > 1 else ""
    return f"{param or 'body'}: {e.get('msg')}{more}", param


def install_error_handlers(app: FastAPI) -> None:
    """Register handlers so that no user mistake becomes a bare 500 or a traceback."""

    def rejected(request: Request, reason: str) -> None:
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.rejected.labels(getattr(request.state, "model", None) or "", reason).inc()

    @app.exception_handler(MaasError)
    async def _maas(request: Request, e: MaasError) -> JSONResponse:
        rejected(request, e.code if isinstance(e.code, str) else e.kind)
        return error_response(e, is_v2(request.url.path))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        rejected(request, "invalid_request")
        msg, param = _validation_message(e)
        if is_v2(request.url.path):
            return JSONResponse({"error": msg}, status_code=400)
        return JSONResponse(error_body(msg, "invalid_request_error", param, "invalid_value"), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        if is_v2(request.url.path):
            return JSONResponse({"error": str(e.detail)}, status_code=e.status_code)
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        code = "payload_too_large" if e.status_code == 413 else e.status_code
        return JSONResponse(error_body(str(e.detail), kind, None, code), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error")
        if is_v2(request.url.path):
            return JSONResponse({"error": "internal server error"}, status_code=500)
        return JSONResponse(error_body("internal server error", "internal_error", None, 500), status_code=500)
