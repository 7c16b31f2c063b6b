"""The ASGI layer in front of the routes: request ids, API keys, body size limit, HTTP metrics,
access log. Pure ASGI (no BaseHTTPMiddleware), so streamed responses pass through untouched."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from starlette.exceptions import HTTPException

from maas.server.caller import Callers
from maas.server.errors import error_body, is_v2
from maas.server.v2 import http as v2_http

access = logging.getLogger("maas.access")

Scope = dict[str, Any]


class Gateway:
    """Wraps the app: every response carries `x-request-id`; /v1, /v2/models and /admin need a key
    when keys are set (admin endpoints an admin key), and the request's Caller is left in its scope
    state; bodies over `max_body_bytes` get a 413."""

    def __init__(self, app: Any, callers: Callers, max_body_bytes: int, json_log: bool = False):
        self.app, self.callers = app, callers
        self.keys, self.metrics = callers.keys, callers.metrics
        self.max_body = max_body_bytes
        self.json_log = json_log
        self.draining = False  # set on SIGTERM: new requests get 503 while running ones finish
        self.in_flight = 0  # requests in progress, /health and /metrics excepted

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.monotonic()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        rid = headers.get("x-request-id") or uuid.uuid4().hex
        rid = rid[:128]
        path: str = scope.get("path", "")
        scope.setdefault("state", {})["request_id"] = rid
        status_box = [500]

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        async def reply(
            status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None
        ) -> None:
            if is_v2(path):  # the Open Inference Protocol's error shape
                body = {"error": body["error"]["message"]}
            data = json.dumps(body).encode()
            hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
            await send_with_id(
                {"type": "http.response.start", "status": status, "headers": hdrs + (extra or [])}
            )
            await send_with_id({"type": "http.response.body", "body": data})

        key_id = None
        counted = path not in ("/health", "/metrics")
        if self.draining and path != "/metrics":
            msg = "the server is shutting down; retry on another instance"
            await reply(503, error_body(msg, "service_unavailable", None, "shutting_down"),
                        [(b"connection", b"close"), (b"retry-after", b"5")])  # fmt: skip
            self._record(scope, path, 503, rid, None, time.monotonic() - t0)
            return
        if counted:
            self.in_flight += 1
        try:
            needs_key = path.startswith(("/v1", "/admin", "/v2/models")) or (
                path == "/metrics" and self.keys.protect_metrics
            )
            address = str((scope.get("client") or ("?",))[0])
            caller = self.callers.authenticate(headers.get("authorization"), address, required=needs_key)
            if caller is None:
                msg = "missing or invalid API key: send `Authorization: Bearer <key>`"
                await reply(401, error_body(msg, "authentication_error", None, "invalid_api_key"),
                            [(b"www-authenticate", b"Bearer")])  # fmt: skip
                return
            key_id = caller.key_id
            if self.keys.enabled and path.startswith("/admin") and not caller.admin:
                await reply(
                    403, error_body("this endpoint needs an admin key", "permission_error", None, 403)
                )
                return
            scope["state"]["caller"] = caller
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body:
                await reply(413, _too_large(self.max_body))
                return
            infer = v2_http.match_infer(scope.get("method", ""), path)
            if infer is not None:  # the tensor-serving hot path, without FastAPI's machinery
                scope["maas.route"] = v2_http.INFER_ROUTE
                await v2_http.infer(self.app, scope, self._limited(receive), send_with_id, headers, *infer)
                return
            await self.app(scope, self._limited(receive), send_with_id)
        finally:
            if counted:
                self.in_flight -= 1
            self._record(scope, path, status_box[0], rid, key_id, time.monotonic() - t0)

    def _limited(self, receive: Any) -> Any:
        seen = 0

        async def wrapped() -> dict[str, Any]:
            nonlocal seen
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    # FastAPI turns an HTTPException raised while reading the body into that status
                    raise HTTPException(413, detail=_too_large_message(self.max_body))
            return message  # type: ignore[no-any-return]

        return wrapped

    def _record(
        self, scope: Scope, path: str, status: int, rid: str, key_id: str | None, secs: float
    ) -> None:
        route = scope.get("route")
        template = (
            scope.get("maas.route")
            or getattr(route, "path", None)
            or ("/v1/*" if path.startswith("/v1") else "other")
        )
        self.metrics.http.labels(template, scope.get("method", ""), str(status)).inc()
        state = scope.get("state", {})
        if self.json_log:
            access.info(json.dumps({
                "request_id": rid, "method": scope.get("method"), "path": path, "status": status,
                "model": state.get("model"), "key_id": key_id, "prompt_tokens": state.get("prompt_tokens"),
                "completion_tokens": state.get("completion_tokens"), "latency_s": round(secs, 4),
            }))  # fmt: skip


def _too_large_message(limit: int) -> str:
    return f"request body over the limit of {limit} bytes"


def _too_large(limit: int) -> dict[str, Any]:
    return error_body(_too_large_message(limit), "invalid_request_error", None, "payload_too_large")
