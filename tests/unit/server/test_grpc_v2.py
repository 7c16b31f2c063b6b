"""The v2 gRPC service driven by the official tritonclient.grpc client: health, metadata, infer
(raw tensors, BYTES / BOOL / INT64), versions, errors as status codes, rate limit and timeout."""

from __future__ import annotations

import grpc
import numpy as np
import torch
import tritonclient.grpc as tc

from maas.errors import MaasError, OverloadedError
from maas.server.v2.grpc import status_code_of
from tests.unit.server.grpc_harness import (
    MODULES,
    Servers,
    fp32_input,
    rpc_error,
)

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
