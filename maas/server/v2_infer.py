"""POST /v2/models/{m}[/versions/{v}]/infer as a plain ASGI handler.

The hot path of tensor serving: the Gateway hands these requests straight here, skipping FastAPI's
routing, dependency solving and response classes (on a small model that machinery costs more CPU
than the forward pass). Keys, body limit, drain and access metrics are the Gateway's, as for
every route; errors are v2's `{"error": message}`.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import orjson
from starlette.exceptions import HTTPException

from maas.errors import MaasError, ModelNotFoundError, OverloadedError
from maas.server.errors import status_of
from maas.server.routes.v2 import api_ref, run_infer
from maas.server.v2_codec import decode_body, decode_request, encode_response

log = logging.getLogger("maas.server")

ROUTE = "/v2/models/{model}/infer"
_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")


def match(method: str, path: str) -> tuple[str, str | None] | None:
    """(model, version) when this is an infer request."""
    m = _PATH.match(path) if method == "POST" else None
    return (m.group(1), m.group(2)) if m else None


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HTTPException(499, "client disconnected")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def infer(app: Any, scope: dict[str, Any], receive: Any, send: Any, headers: dict[str, str],
                model: str, version: str | None) -> None:  # fmt: skip
    """Answer one infer request (`app` is the FastAPI app: its state holds the pool and options)."""
    t0 = time.monotonic()
    state = app.state
    name = api_ref(model, version)
    scope["state"]["model"] = name
    extra: list[tuple[bytes, bytes]] = []
    try:
        body = decode_body(
            await _body(receive), headers.get("content-encoding"), state.options.max_body_bytes
        )
        req = decode_request(body, headers.get("inference-header-content-length"))
        key = scope["state"].get("key_id")
        client = f"key:{key}" if key else f"addr:{(scope.get('client') or ('?',))[0]}"
        out = await run_infer(state.models, name, req, state.options, state.limiter, client)
        data, header = encode_response(model, version, out, req, req.echo_parameters)
        state.metrics.infer_latency.labels(name).observe(time.monotonic() - t0)
        status = 200
        if header is None:
            kind = b"application/json"
        else:
            kind = b"application/octet-stream"
            extra.append((b"inference-header-content-length", str(header).encode()))
    except HTTPException as e:  # the Gateway's body limit (413) or a client gone
        status, data, kind = e.status_code, orjson.dumps({"error": str(e.detail)}), b"application/json"
    except MaasError as e:
        model_label = "" if isinstance(e, ModelNotFoundError) else name  # no series per unknown name
        state.metrics.rejected.labels(model_label, e.code if isinstance(e.code, str) else e.kind).inc()
        status, data, kind = status_of(e), orjson.dumps({"error": e.message}), b"application/json"
        if isinstance(e, OverloadedError):
            extra.append((b"retry-after", b"1"))
    except Exception:
        log.exception("unhandled error in v2 infer")
        status, data, kind = 500, orjson.dumps({"error": "internal server error"}), b"application/json"
    hdrs = [(b"content-type", kind), (b"content-length", str(len(data)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": data})
