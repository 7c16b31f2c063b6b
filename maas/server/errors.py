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
    if isinstance(e, InvalidRequestError):
        return 400
    if isinstance(e, OverloadedError):
        return 429
    if isinstance(e, EngineDeadError):
        return 503
    if isinstance(e, RequestTimeoutError):
        return 504
    return 500


def error_response(e: MaasError) -> JSONResponse:
    """A JSONResponse for a maas error (429s carry Retry-After)."""
    headers = {"Retry-After": "1"} if isinstance(e, OverloadedError) else None
    return JSONResponse(
        error_body(e.message, e.kind, e.param, e.code), status_code=status_of(e), headers=headers
    )


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
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        rejected(request, "invalid_request")
        msg, param = _validation_message(e)
        return JSONResponse(error_body(msg, "invalid_request_error", param, "invalid_value"), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        code = "payload_too_large" if e.status_code == 413 else e.status_code
        return JSONResponse(error_body(str(e.detail), kind, None, code), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def _bug(_: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body("internal server error", "internal_error", None, 500), status_code=500)
