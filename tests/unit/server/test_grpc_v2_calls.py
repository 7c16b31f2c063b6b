"""The v2 gRPC service: typed contents, raw-content checks, API keys, ports, start and stop with
the app, and the HTTP drain covering gRPC."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import grpc
import numpy as np
import pytest
import torch
import tritonclient.grpc as tc

from maas.errors import MaasError
from maas.server.app import ServerOptions, create_app
from maas.server.pool import ModelPool
from maas.server.state import ModelSpec
from maas.server.v2 import grpc_codec as pb
from maas.server.v2.dataplane import DataPlane
from maas.server.v2.grpc import GrpcServer
from tests.unit.server.grpc_harness import (
    MODULES,
    Loop,
    Servers,
    fp32_input,
    load,
    rpc_error,
)


def call_infer(servers: Servers, msg: Any) -> Any:
    with grpc.insecure_channel(f"127.0.0.1:{servers.servers['open'].port}") as ch:
        fn = ch.unary_unary(
            f"/{pb.SERVICE}/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        return fn(msg, timeout=10)


def test_typed_contents(servers: Servers) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4) / 10
    msg = pb.ModelInferRequest(model_name="clf", id="t1")
    msg.inputs.add(name="input", datatype="FP32", shape=[2, 4]).contents.fp32_contents.extend(
        x.ravel().tolist()
    )
    resp = call_infer(servers, msg)
    assert resp.id == "t1" and resp.outputs[0].name == "scores" and list(resp.outputs[0].shape) == [2, 3]
    got = np.frombuffer(resp.raw_output_contents[0], "<f4").reshape(2, 3)
    with torch.inference_mode():
        want = MODULES["clf"](torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)

    msg = pb.ModelInferRequest(model_name="strings")
    msg.inputs.add(name="text", datatype="BYTES", shape=[1, 1]).contents.bytes_contents.append(b"q")
    msg.inputs.add(name="flag", datatype="BOOL", shape=[1, 2]).contents.bool_contents.extend([True, False])
    resp = call_infer(servers, msg)
    assert resp.raw_output_contents[0] == b"\x01\x00\x00\x00Q"  # BYTES: 4-byte length, then the bytes


@pytest.mark.parametrize(
    ("fill", "needle"),
    [
        (lambda c: c.fp32_contents.extend([1.0, 2.0]), "2 values; shape [1, 4] needs 4"),
        (lambda c: c.int_contents.extend([1, 2, 3, 4]), "contents.fp32_contents, not contents.int_contents"),
    ],
)
def test_typed_contents_are_checked(servers: Servers, fill: Any, needle: str) -> None:
    msg = pb.ModelInferRequest(model_name="clf")
    fill(msg.inputs.add(name="input", datatype="FP32", shape=[1, 4]).contents)
    with pytest.raises(grpc.RpcError) as e:
        call_infer(servers, msg)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'input'" in e.value.details() and needle in e.value.details()


def test_decode_checks_raw_contents_and_ranges() -> None:
    msg = pb.ModelInferRequest(model_name="m")
    msg.inputs.add(name="a", datatype="INT8", shape=[2]).contents.int_contents.extend([1, 300])
    with pytest.raises(Exception, match="'a'.*range"):
        pb.decode_infer_request(msg)
    msg = pb.ModelInferRequest(model_name="m")
    msg.inputs.add(name="a", datatype="FP32", shape=[2])
    msg.inputs.add(name="b", datatype="FP32", shape=[2])
    msg.raw_input_contents.append(np.zeros(2, "<f4").tobytes())
    with pytest.raises(Exception, match="1 entries for 2 inputs"):
        pb.decode_infer_request(msg)
    msg.raw_input_contents.append(np.zeros(3, "<f4").tobytes())
    with pytest.raises(Exception, match="'b' has 12 bytes"):
        pb.decode_infer_request(msg)


# -- API keys and rate limits ---------------------------------------------------------------------


def test_api_key_required_when_keys_are_set(servers: Servers) -> None:
    x = [fp32_input(np.zeros((1, 4), np.float32))]
    with servers.client("keyed") as c:
        assert c.is_server_live() and c.is_server_ready()  # health stays open
        e = rpc_error(c.infer, "clf", x)
        assert e.status() == "StatusCode.UNAUTHENTICATED" and "API key" in e.message()
        assert rpc_error(c.get_model_metadata, "clf").status() == "StatusCode.UNAUTHENTICATED"
        bad = {"authorization": "Bearer wrong"}
        assert rpc_error(c.infer, "clf", x, headers=bad).status() == "StatusCode.UNAUTHENTICATED"
        ok = {"authorization": "Bearer secret"}
        assert c.get_model_metadata("clf", headers=ok).name == "clf"
        assert c.infer("clf", x, headers=ok).as_numpy("scores").shape == (1, 3)
        assert c.infer("clf", x, headers=ok).as_numpy("scores").shape == (1, 3)
        e = rpc_error(c.infer, "clf", x, headers=ok)  # the third in a minute, over 2 requests/min
        assert e.status() == "StatusCode.RESOURCE_EXHAUSTED" and "rate limit" in e.message()


# -- wiring into the app --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_port_in_use_is_an_error(servers: Servers, loop: Loop) -> None:
    taken = servers.servers["open"].port
    with pytest.raises(MaasError, match=f"cannot listen for gRPC on 127.0.0.1:{taken}"):
        loop.run(GrpcServer(DataPlane(servers.pool), servers.callers(), 4096).start("127.0.0.1", taken))


def test_the_app_starts_and_stops_grpc(loop: Loop) -> None:
    port = free_port()
    pool = ModelPool([ModelSpec("clf", "tensor", "path", "clf")], load)
    app = create_app(pool, ServerOptions(grpc_port=port)).app
    started, stop = asyncio.Event(), asyncio.Event()

    async def lifespan() -> None:
        async with app.router.lifespan_context(app):
            started.set()
            await stop.wait()

    task = asyncio.run_coroutine_threadsafe(lifespan(), loop.loop)
    loop.run(started.wait())
    with tc.InferenceServerClient(f"127.0.0.1:{port}") as c:
        assert c.is_server_ready()
        assert c.infer("clf", [fp32_input(np.zeros((2, 4), np.float32))]).as_numpy("scores").shape == (2, 3)
    loop.loop.call_soon_threadsafe(stop.set)
    task.result(10)
    with tc.InferenceServerClient(f"127.0.0.1:{port}") as c:
        assert rpc_error(c.is_server_live, client_timeout=2).status() in (
            "StatusCode.UNAVAILABLE",
            "StatusCode.DEADLINE_EXCEEDED",
        )


def test_the_http_drain_covers_grpc(servers: Servers, loop: Loop) -> None:
    from types import SimpleNamespace

    gate = SimpleNamespace(draining=False, in_flight=0)
    srv = GrpcServer(DataPlane(servers.pool), servers.callers(), 32 << 20, gate=gate)
    loop.run(srv.start("127.0.0.1", 0))
    c = tc.InferenceServerClient(f"127.0.0.1:{srv.port}")
    x = np.zeros((1, 4), np.float32)
    try:
        assert c.is_server_ready() and c.infer("clf", [fp32_input(x)]).as_numpy("scores").shape[0] == 1
        assert gate.in_flight == 0  # counted while running, released after
        gate.draining = True
        assert not c.is_server_ready() and c.is_server_live()
        e = rpc_error(c.infer, "clf", [fp32_input(x)])
        assert e.status() == "StatusCode.UNAVAILABLE" and "shutting down" in e.message()
    finally:
        c.close()
        loop.run(srv.stop(0))
