"""The v2 gRPC service driven by the official tritonclient.grpc client: health, metadata, infer
(raw and typed tensors, BYTES / BOOL / INT64), versions, errors as status codes, API keys, rate
limit and request timeout; servers on loopback over a pool of tiny models, on a background loop."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import torch
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from maas.engine.tensor_backends import TorchBackend
from maas.engine.tensor_engine import TensorEngine
from maas.errors import MaasError, OverloadedError
from maas.models.signature import Signature, TensorSpec, classifier_signature
from maas.server import grpc_v2_codec as pb
from maas.server.app import ServerOptions, create_app
from maas.server.auth import KeyRing
from maas.server.grpc_v2 import GrpcServer, status_code_of
from maas.server.metrics import Metrics
from maas.server.pool import ModelPool
from maas.server.state import ModelSpec, ServedModel

STRINGS = Signature(
    (TensorSpec("text", "BYTES", (-1, 1)), TensorSpec("flag", "BOOL", (-1, 2))),
    (TensorSpec("upper", "BYTES", (-1, 1)), TensorSpec("not_flag", "BOOL", (-1, 2)),
     TensorSpec("lengths", "INT64", (-1, 1))),
)  # fmt: skip
SLOW = Signature((TensorSpec("x", "FP32", (-1, 1)),), (TensorSpec("y", "FP32", (-1, 1)),))


class StringsBackend:
    """BYTES and BOOL in; upper-cased text, negated flags and text lengths out."""

    platform = "numpy"
    signature = STRINGS

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        text = inputs["text"][:, 0]  # (B,) of bytes
        if b"boom" in text.tolist():
            raise RuntimeError("boom")
        upper = np.empty((len(text), 1), dtype=object)
        upper[:, 0] = [s.upper() for s in text]
        lengths = np.array([[len(s)] for s in text], dtype=np.int64)  # (B, 1)
        return {"upper": upper, "not_flag": ~inputs["flag"], "lengths": lengths}

    def memory_bytes(self) -> int:
        return 0


class SlowBackend:
    """Takes a second a batch (for the request timeout)."""

    platform = "numpy"
    signature = SLOW

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(1.0)
        return {"y": inputs["x"]}

    def memory_bytes(self) -> int:
        return 0


def classifier(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(-1))


MODULES = {"clf": classifier(0), "clf:v2": classifier(1), "lazy": classifier(2)}


def load(spec: ModelSpec) -> ServedModel:
    if spec.name == "strings":
        backend: Any = StringsBackend()
    elif spec.name == "slow":
        backend = SlowBackend()
    else:
        backend = TorchBackend(MODULES[spec.name], classifier_signature((4,), ["a", "b", "c"]))
    return ServedModel(spec.name, spec.kind, TensorEngine(backend))


def make_pool() -> ModelPool:
    static = [ModelSpec(n, "tensor", "path", n) for n in ("clf", "clf:v2", "strings", "slow")]
    extra = {
        "lazy": ModelSpec("lazy", "tensor", "path", "lazy"),
        "chat": ModelSpec("chat", "llm", "path", "chat"),
    }
    return ModelPool(static, load, lookup=extra.get)


class Loop:
    """An event loop on a thread: the servers run there, the (blocking) clients here."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Servers:
    """Three gRPC servers over one pool: open, keyed (2 requests/min), small (timeout, message size)."""

    def __init__(self, loop: Loop):
        self.pool = make_pool()
        self.metrics = Metrics(lambda: [])
        loop.run(self.pool.preload())
        keyed = ServerOptions(keys=KeyRing.build(["secret"], []), requests_per_min=2)
        self.servers = {
            "open": GrpcServer(self.pool, ServerOptions(), self.metrics),
            "keyed": GrpcServer(self.pool, keyed, self.metrics),
            "small": GrpcServer(
                self.pool, ServerOptions(request_timeout_s=0.2, max_body_bytes=4096), self.metrics
            ),
        }
        for s in self.servers.values():
            loop.run(s.start("127.0.0.1", 0))

    def client(self, which: str = "open") -> tc.InferenceServerClient:
        return tc.InferenceServerClient(f"127.0.0.1:{self.servers[which].port}")


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def servers(loop: Loop) -> Iterator[Servers]:
    s = Servers(loop)
    yield s
    for srv in s.servers.values():
        loop.run(srv.stop(0))
    s.pool.shutdown()


@pytest.fixture(scope="module")
def client(servers: Servers) -> Iterator[tc.InferenceServerClient]:
    c = servers.client()
    yield c
    c.close()


def fp32_input(x: np.ndarray, name: str = "input") -> tc.InferInput:
    i = tc.InferInput(name, list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    return i


def rpc_error(fn: Any, *args: Any, **kwargs: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as e:
        fn(*args, **kwargs)
    return e.value


# -- health and metadata ------------------------------------------------------------------------


def test_server_live_ready_and_metadata(client: tc.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "maas" and meta["version"]


def test_model_metadata_lists_tensors_and_versions(client: tc.InferenceServerClient) -> None:
    meta = client.get_model_metadata("clf", as_json=True)
    assert meta["platform"] == "pytorch_libtorch"
    assert meta["versions"] == ["latest", "v2"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert meta["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": ["-1", "3"]}]
    strings = client.get_model_metadata("strings", as_json=True)
    assert [t["datatype"] for t in strings["inputs"]] == ["BYTES", "BOOL"]


def test_model_ready_follows_loading(client: tc.InferenceServerClient) -> None:
    assert client.is_model_ready("clf")
    assert client.is_model_ready("clf", "v2")
    assert not client.is_model_ready("lazy")  # servable, loads on first use
    client.get_model_metadata("lazy")
    assert client.is_model_ready("lazy")
    assert not client.is_model_ready("chat")  # not a tensor model
    assert rpc_error(client.is_model_ready, "nope").status() == "StatusCode.NOT_FOUND"


# -- infer ----------------------------------------------------------------------------------------


def test_infer_fp32_matches_the_model(client: tc.InferenceServerClient) -> None:
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    res = client.infer("clf", [fp32_input(x)], request_id="req-7")
    with torch.inference_mode():
        want = MODULES["clf"](torch.from_numpy(x)).numpy()
    got = res.as_numpy("scores")
    assert got.dtype == np.float32 and got.shape == (3, 3)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    resp = res.get_response()
    assert resp.id == "req-7" and resp.model_name == "clf"


def test_a_version_is_a_registry_tag(client: tc.InferenceServerClient) -> None:
    x = np.ones((1, 4), np.float32)
    got = client.infer("clf", [fp32_input(x)], model_version="v2").as_numpy("scores")
    with torch.inference_mode():
        want = MODULES["clf:v2"](torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    e = rpc_error(client.infer, "clf", [fp32_input(x)], model_version="v9")
    assert e.status() == "StatusCode.NOT_FOUND" and "clf:v9" in e.message()


def strings_inputs(text: list[bytes], flags: np.ndarray) -> list[tc.InferInput]:
    t = tc.InferInput("text", [len(text), 1], "BYTES")
    t.set_data_from_numpy(np.array(text, dtype=object).reshape(-1, 1))
    f = tc.InferInput("flag", list(flags.shape), "BOOL")
    f.set_data_from_numpy(flags)
    return [t, f]


def test_bytes_and_bool_round_trip(client: tc.InferenceServerClient) -> None:
    flags = np.array([[True, False], [False, False]])
    res = client.infer("strings", strings_inputs([b"ab", "h\u00e9!".encode()], flags))
    assert res.as_numpy("upper").ravel().tolist() == [b"AB", "h\u00e9!".encode().upper()]
    np.testing.assert_array_equal(res.as_numpy("not_flag"), ~flags)
    lengths = res.as_numpy("lengths")
    assert lengths.dtype == np.int64 and lengths.ravel().tolist() == [2, 4]


def test_outputs_selection(client: tc.InferenceServerClient) -> None:
    flags = np.zeros((1, 2), bool)
    res = client.infer(
        "strings", strings_inputs([b"xyz"], flags), outputs=[tc.InferRequestedOutput("lengths")]
    )
    assert [o.name for o in res.get_response().outputs] == ["lengths"]
    assert res.as_numpy("lengths").tolist() == [[3]]
    assert res.as_numpy("upper") is None


def test_parameters_are_echoed(client: tc.InferenceServerClient) -> None:
    res = client.infer("clf", [fp32_input(np.zeros((1, 4), np.float32))], parameters={"tag": "a", "n": 3})
    params = res.get_response(as_json=True)["parameters"]
    assert params["tag"] == {"string_param": "a"} and params["n"] == {"int64_param": "3"}


def test_infer_latency_is_observed(servers: Servers, client: tc.InferenceServerClient) -> None:
    client.infer("clf", [fp32_input(np.zeros((1, 4), np.float32))])
    assert b'maas:inference_request_latency_seconds_count{model="clf"}' in servers.metrics.render()


# -- errors -------------------------------------------------------------------------------------


def test_unknown_model_is_not_found(client: tc.InferenceServerClient) -> None:
    e = rpc_error(client.infer, "nope", [fp32_input(np.zeros((1, 4), np.float32))])
    assert e.status() == "StatusCode.NOT_FOUND" and "'nope'" in e.message()
    assert rpc_error(client.get_model_metadata, "nope").status() == "StatusCode.NOT_FOUND"


def test_bad_inputs_are_invalid_argument_naming_the_input(client: tc.InferenceServerClient) -> None:
    i = tc.InferInput("input", [1, 4], "INT32")
    i.set_data_from_numpy(np.zeros((1, 4), np.int32))
    e = rpc_error(client.infer, "clf", [i])
    assert e.status() == "StatusCode.INVALID_ARGUMENT"
    assert "'input'" in e.message() and "INT32" in e.message()
    e = rpc_error(client.infer, "clf", [fp32_input(np.zeros((1, 5), np.float32))])
    assert e.status() == "StatusCode.INVALID_ARGUMENT" and "'input'" in e.message() and "shape" in e.message()
    e = rpc_error(client.infer, "clf", [fp32_input(np.zeros((1, 4), np.float32), "pixels")])
    assert e.status() == "StatusCode.INVALID_ARGUMENT" and "'pixels'" in e.message()


def test_unsupported_features_are_refused(client: tc.InferenceServerClient) -> None:
    x = [fp32_input(np.zeros((1, 4), np.float32))]
    e = rpc_error(client.infer, "clf", x, outputs=[tc.InferRequestedOutput("scores", class_count=2)])
    assert e.status() == "StatusCode.INVALID_ARGUMENT" and "classification" in e.message()
    e = rpc_error(client.infer, "clf", x, sequence_id=5)
    assert e.status() == "StatusCode.INVALID_ARGUMENT" and "sequence" in e.message()
    e = rpc_error(client.infer, "chat", x)
    assert e.status() == "StatusCode.INVALID_ARGUMENT" and "not a tensor model" in e.message()


def test_request_timeout_and_message_size(servers: Servers) -> None:
    with servers.client("small") as c:
        e = rpc_error(c.infer, "slow", [fp32_input(np.zeros((1, 1), np.float32), "x")])
        assert e.status() == "StatusCode.DEADLINE_EXCEEDED" and "timeout" in e.message()
        e = rpc_error(c.infer, "clf", [fp32_input(np.zeros((300, 4), np.float32))])  # 4800 bytes > 4096
        assert e.status() == "StatusCode.RESOURCE_EXHAUSTED"


def test_a_failing_model_is_unavailable_and_other_errors_internal(client: tc.InferenceServerClient) -> None:
    e = rpc_error(client.infer, "strings", strings_inputs([b"boom"], np.zeros((1, 2), bool)))
    assert e.status() == "StatusCode.UNAVAILABLE" and "boom" in e.message()
    assert status_code_of(MaasError("disk full")) == grpc.StatusCode.INTERNAL
    assert status_code_of(OverloadedError("busy")) == grpc.StatusCode.RESOURCE_EXHAUSTED


# -- typed contents (what other clients send instead of raw bytes) -------------------------------


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
        loop.run(GrpcServer(servers.pool, ServerOptions(), servers.metrics).start("127.0.0.1", taken))


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
    srv = GrpcServer(servers.pool, ServerOptions(), servers.metrics, gate=gate)
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
