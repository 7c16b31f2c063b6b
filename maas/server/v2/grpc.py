"""The Open Inference Protocol v2 over gRPC (KServe's and Triton's `inference.GRPCInferenceService`):
the health, metadata and infer calls for tensor models, a thin adapter over the DataPlane, served by
grpc.aio on the HTTP server's event loop. Errors are gRPC status codes carrying the HTTP side's messages.

maas serve runs/cnn-digits --grpc-port 8001
tritonclient.grpc.InferenceServerClient("localhost:8001").infer("cnn-digits", inputs)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import grpc

from maas.errors import (
    EngineDeadError,
    InvalidRequestError,
    MaasError,
    ModelNotFoundError,
    OverloadedError,
    RequestTimeoutError,
)
from maas.server.caller import Caller, Callers
from maas.server.v2 import grpc_codec as pb
from maas.server.v2.dataplane import DataPlane, pool_name

log = logging.getLogger("maas.server")

Handler = Callable[[Any, Caller], Awaitable[Any]]  # (request message, caller) -> response message

_CODES: tuple[tuple[type[MaasError], grpc.StatusCode], ...] = (
    (ModelNotFoundError, grpc.StatusCode.NOT_FOUND),
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (OverloadedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (EngineDeadError, grpc.StatusCode.UNAVAILABLE),
    (RequestTimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
)
_NO_KEY = "missing or invalid API key: send the metadata `authorization: Bearer <key>`"


def status_code_of(e: MaasError) -> grpc.StatusCode:
    """The gRPC status code for a maas error (INTERNAL for the unexpected ones)."""
    for cls, code in _CODES:
        if isinstance(e, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _peer_host(peer: str) -> str:
    """The address part of a gRPC peer (`ipv4:1.2.3.4:5678` -> `1.2.3.4`; `ipv6:[::1]:5678` -> `::1`)."""
    _, _, rest = peer.partition(":")
    host = rest.rsplit(":", 1)[0] if rest.count(":") and not rest.endswith("]") else rest
    return host.strip("[]") or "?"


def _model_of(request: Any) -> str:
    """The pool name a request is about, for metrics ("" when none)."""
    if hasattr(request, "model_name"):
        return pool_name(request.model_name, request.model_version)
    if hasattr(request, "name"):
        return pool_name(request.name, request.version)
    return ""


class Gate(Protocol):
    """The HTTP Gateway's drain, which gRPC model calls share."""

    draining: bool
    in_flight: int


def _need_name(name: str, field: str) -> None:
    if not name:
        raise InvalidRequestError(f"{field} is required (the model's name)", param=field)


class GrpcServer:
    """The v2 gRPC service over a data plane; `await start(host, port)`, then `await stop()`.
    `gate` (the HTTP Gateway) makes its graceful drain cover gRPC model calls too."""

    def __init__(self, plane: DataPlane, callers: Callers, max_message_bytes: int, gate: Gate | None = None):
        self.plane, self.callers, self.max_message_bytes, self.gate = plane, callers, max_message_bytes, gate
        self.port = 0
        self.server: grpc.aio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (port 0: any free one) and serve; returns the port."""
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),  # a port in use is an error, not a second silent listener
            ]
        )
        server.add_generic_rpc_handlers((self._handlers(),))
        address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError:  # newer grpcio raises; older ones return 0
            bound = 0
        if bound == 0:
            raise MaasError(
                f"cannot listen for gRPC on {address}: the port is in use or the address is not this host's"
            )
        await server.start()
        self.server, self.port = server, bound
        log.info("Open Inference Protocol v2 over gRPC on %s:%d", host, bound)
        return bound

    async def stop(self, grace: float = 2.0) -> None:
        """Stop accepting calls; running ones get `grace` seconds to finish."""
        if self.server is not None:
            await self.server.stop(grace)
            self.server = None

    def _handlers(self) -> grpc.GenericRpcHandler:
        def rpc(fn: Handler, req: Any, resp: Any, keyed: bool) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                self._call(fn, keyed),
                request_deserializer=req.FromString,
                response_serializer=resp.SerializeToString,
            )

        return grpc.method_handlers_generic_handler(
            pb.SERVICE,
            {
                "ServerLive": rpc(self._server_live, pb.ServerLiveRequest, pb.ServerLiveResponse, False),
                "ServerReady": rpc(self._server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse, False),
                "ServerMetadata": rpc(
                    self._server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse, False
                ),
                "ModelReady": rpc(self._model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse, True),
                "ModelMetadata": rpc(
                    self._model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse, True
                ),
                "ModelInfer": rpc(self._model_infer, pb.ModelInferRequest, pb.ModelInferResponse, True),
            },
        )

    def _call(self, fn: Handler, keyed: bool) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        """`fn` behind the drain and the API-key check, with maas errors turned into status codes."""

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            gate = self.gate
            if gate is None:
                return await checked(request, context)
            if gate.draining and keyed:
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE, "the server is shutting down; retry on another instance"
                )
            gate.in_flight += 1  # the drain waits for these too
            try:
                return await checked(request, context)
            finally:
                gate.in_flight -= 1

        async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
            header = dict(context.invocation_metadata() or ()).get("authorization")
            caller = self.callers.authenticate(
                header if isinstance(header, str) else None, _peer_host(context.peer()), required=keyed
            )
            if caller is None:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, _NO_KEY)
                return None  # abort raises; this line is never reached
            try:
                return await fn(request, caller)
            except MaasError as e:
                code, message = status_code_of(e), e.message
                if code == grpc.StatusCode.INTERNAL:
                    log.error("gRPC %s: %s", type(request).__name__, message)
                self.callers.rejected(_model_of(request), e)
            except Exception:
                log.exception("unhandled error in a gRPC call")
                code, message = grpc.StatusCode.INTERNAL, "internal server error"
            await context.abort(code, message)

        return call

    # -- the calls: decode, ask the data plane, encode ----------------------------------------

    async def _server_live(self, request: Any, caller: Caller) -> Any:
        return pb.ServerLiveResponse(live=self.plane.live())

    async def _server_ready(self, request: Any, caller: Caller) -> Any:
        draining = self.gate is not None and self.gate.draining
        return pb.ServerReadyResponse(ready=self.plane.ready() and not draining)

    async def _server_metadata(self, request: Any, caller: Caller) -> Any:
        return pb.ServerMetadataResponse(**self.plane.server_metadata())

    async def _model_ready(self, request: Any, caller: Caller) -> Any:
        _need_name(request.name, "name")
        return pb.ModelReadyResponse(ready=self.plane.model_ready(request.name, request.version))

    async def _model_metadata(self, request: Any, caller: Caller) -> Any:
        _need_name(request.name, "name")
        meta = await self.plane.model_metadata(request.name, request.version or None)
        resp = pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"]
        )
        for t in meta["inputs"]:
            resp.inputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        for t in meta["outputs"]:
            resp.outputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        return resp

    async def _model_infer(self, request: Any, caller: Caller) -> Any:
        t0 = time.monotonic()
        _need_name(request.model_name, "model_name")
        req = pb.decode_infer_request(request)
        self.callers.admit(caller)
        out = await self.plane.infer(request.model_name, request.model_version, req)
        resp = pb.encode_infer_response(
            request.model_name, request.model_version, out, req, req.echo_parameters
        )
        self.callers.served(pool_name(request.model_name, request.model_version), time.monotonic() - t0)
        return resp


async def start_grpc(
    plane: DataPlane, callers: Callers, host: str, port: int, max_message_bytes: int, gate: Gate | None = None
) -> GrpcServer:
    """A running v2 gRPC server on host:port (port 0: any free one; see `.port`); `gate` (the HTTP
    Gateway) makes its graceful drain cover gRPC calls."""
    server = GrpcServer(plane, callers, max_message_bytes, gate)
    await server.start(host, port)
    return server
