"""Open Inference Protocol tensors on the wire: JSON and binary, every datatype, and bad bodies."""

from __future__ import annotations

import gzip
import json
import zlib

import numpy as np
import pytest
import tritonclient.http as th

from maas.errors import InvalidRequestError, PayloadTooLargeError
from maas.server.v2.codec import decode_body, decode_request, encode_response, timeout_s

ALL = {
    "BOOL": np.array([[True, False, True]]),
    "UINT8": np.array([[0, 7, 255]], np.uint8),
    "UINT16": np.array([[0, 7, 65535]], np.uint16),
    "UINT32": np.array([[0, 7, 2**32 - 1]], np.uint32),
    "UINT64": np.array([[0, 7, 2**63]], np.uint64),
    "INT8": np.array([[-128, 0, 127]], np.int8),
    "INT16": np.array([[-5, 0, 5]], np.int16),
    "INT32": np.array([[-5, 0, 5]], np.int32),
    "INT64": np.array([[-(2**40), 0, 2**40]], np.int64),
    "FP16": np.array([[0.5, -1.25, 3.0]], np.float16),
    "FP32": np.array([[0.1, -2.5, 3e10]], np.float32),
    "FP64": np.array([[0.1, -2.5, 1e300]], np.float64),
    "BYTES": np.array([[b"a", b"", "\u00e9t\u00e9".encode()]], dtype=object),
}


def client_body(arrays: dict[str, np.ndarray], binary: bool) -> tuple[bytes, str | None]:
    """The exact body tritonclient.http sends (its own request builder)."""
    from tritonclient.http._utils import _get_inference_request

    inputs = []
    for name, a in arrays.items():
        dt = name.split("_")[0]
        i = th.InferInput(name, list(a.shape), dt)
        i.set_data_from_numpy(a, binary_data=binary)
        inputs.append(i)
    body, header = _get_inference_request(inputs, "req-1", None, 0, False, False, 0, None, None)
    return body, None if header is None else str(header)


@pytest.mark.parametrize("binary", [False, True])
def test_every_datatype_round_trips_from_tritonclient(binary: bool) -> None:
    body, header = client_body({f"{k}_in": v for k, v in ALL.items()}, binary)
    req = decode_request(body, header)
    assert req.id == "req-1" and req.binary_default  # tritonclient asks for binary outputs when naming none
    for k, v in ALL.items():
        got = req.inputs[f"{k}_in"]
        assert got.shape == v.shape
        assert got.dtype == (object if k == "BYTES" else v.dtype)
        assert got.tolist() == v.tolist()


def test_nested_and_flat_json_data_give_the_same_array() -> None:
    flat = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]}]}
    nested = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}]}
    a = decode_request(json.dumps(flat).encode(), None).inputs["x"]
    b = decode_request(json.dumps(nested).encode(), None).inputs["x"]
    assert a.dtype == np.float32 and np.array_equal(a, b) and a.shape == (2, 2)


def test_responses_in_json_and_binary_are_read_back_by_tritonclient() -> None:
    from tritonclient.http._infer_result import InferResult

    out = {"scores": np.array([[0.25, 0.75]], np.float32), "names": np.array([b"cat"], dtype=object)}
    for binary in (False, True):
        req = decode_request(json.dumps({"id": "x", "inputs": [{"name": "a", "datatype": "INT8", "shape": [1],
                             "data": [1]}], "parameters": {"binary_data_output": binary}}).encode(), None)  # fmt: skip
        body, header = encode_response("m", "onnx", out, req, {"trace": "t1"})
        assert (header is not None) == binary
        r = InferResult.from_response_body(body, header_length=header)
        assert np.array_equal(r.as_numpy("scores"), out["scores"])
        assert r.as_numpy("names").tolist() == [b"cat" if binary else "cat"]  # as tritonclient reads Triton's
        resp = r.get_response()
        assert resp["id"] == "x" and resp["model_version"] == "onnx" and resp["parameters"] == {"trace": "t1"}


def test_output_selection_and_per_output_binary_flag() -> None:
    doc = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1.0]}],
           "outputs": [{"name": "p", "parameters": {"binary_data": True}}, {"name": "q"}]}  # fmt: skip
    req = decode_request(json.dumps(doc).encode(), None)
    assert req.outputs == ["p", "q"] and req.binary == {"p"}


def test_compressed_bodies_are_inflated_within_the_body_limit() -> None:
    raw = json.dumps({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1.0]}]}).encode()
    assert decode_body(gzip.compress(raw), "gzip", 1000) == raw
    assert decode_body(zlib.compress(raw), "deflate", 1000) == raw
    with pytest.raises(InvalidRequestError, match="not valid gzip"):
        decode_body(b"nope", "gzip", 1000)
    bomb = gzip.compress(b"\0" * 10_000_000)  # 10 MB of zeros in about 10 KB
    with pytest.raises(PayloadTooLargeError, match="inflates to over the limit of 1000000 bytes"):
        decode_body(bomb, "gzip", 1_000_000)
    with pytest.raises(InvalidRequestError, match="Content-Encoding 'br'"):
        decode_body(raw, "br", 1000)


def test_timeout_parameter_is_honoured_and_shared_memory_refused() -> None:
    assert timeout_s({"timeout": 250_000}, 0) == 0.25 and timeout_s({"timeout": 5_000_000}, 2.0) == 2.0
    assert timeout_s({}, 3.0) == 3.0
    assert "positive number of microseconds" in bad(inp() | {"parameters": {"timeout": -1}})
    shm = inp()
    shm["inputs"][0]["parameters"] = {"shared_memory_region": "r0"}  # type: ignore[index]
    assert "'img': shared memory is not supported" in bad(shm)
    out_shm = inp() | {"outputs": [{"name": "s", "parameters": {"shared_memory_region": "r1"}}]}
    assert "'s': shared memory is not supported" in bad(out_shm)


def bad(doc: object, header: str | None = None, extra: bytes = b"") -> str:
    body = (json.dumps(doc).encode() if not isinstance(doc, bytes) else doc) + extra
    with pytest.raises(InvalidRequestError) as e:
        decode_request(body, header)
    return e.value.message


def inp(**kw: object) -> dict[str, object]:
    return {"inputs": [{"name": "img", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]} | kw]}


def test_bad_bodies_get_messages_naming_the_input() -> None:
    assert "not valid JSON" in bad(b"{nope")
    assert 'non-empty "inputs"' in bad({"inputs": []})
    assert "'img' has 3 values; shape [1, 2] needs 2" in bad(inp(data=[1, 2, 3]))
    assert "datatype 'FP8'" in bad(inp(datatype="FP8"))
    assert "shape must be a list" in bad(inp(shape=[1, -2]))
    assert "'img': FP32 data cannot be strings" in bad(inp(data=["1", "2"]))
    assert "'img': FP32 data cannot be booleans" in bad(inp(data=[True, False]))
    assert "ragged" in bad(inp(data=[[1], [2, 3]]))
    assert "'img': BYTES data must be strings" in bad(inp(datatype="BYTES"))
    assert "outside INT8's range" in bad(inp(datatype="INT8", data=[1, 300]))
    assert "INT32 data must be integers" in bad(inp(datatype="INT32", data=[1.5, 2]))
    assert "has no data" in bad({"inputs": [{"name": "img", "datatype": "FP32", "shape": [1]}]})
    twice = {"inputs": [inp()["inputs"][0], inp()["inputs"][0]]}  # type: ignore[index]
    assert "given twice" in bad(twice)
    assert "sequence batching" in bad(inp() | {"parameters": {"sequence_id": 3}})
    assert "classification extension" in bad(
        inp() | {"outputs": [{"name": "s", "parameters": {"classification": 2}}]}
    )


def test_bad_binary_framing_is_refused() -> None:
    head = {
        "inputs": [
            {"name": "img", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}}
        ]
    }
    h = json.dumps(head).encode()
    ok = decode_request(h + np.array([1, 2], np.float32).tobytes(), str(len(h)))
    assert ok.inputs["img"].tolist() == [[1.0, 2.0]]
    assert "runs past the end" in bad(head, str(len(h)), b"\0" * 4)
    assert "beyond the binary tensors" in bad(head, str(len(h)), b"\0" * 12)
    assert "not a length within" in bad(head, "99999", b"\0" * 8)
    head["inputs"][0]["parameters"]["binary_data_size"] = 4  # type: ignore[index]
    h = json.dumps(head).encode()
    assert "'img' has 4 bytes of data; shape [1, 2] of FP32 needs 8" in bad(head, str(len(h)), b"\0" * 4)
    b = {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 9}}]}
    hb = json.dumps(b).encode()
    assert "has 1 BYTES elements; shape [2] needs 2" in bad(
        b, str(len(hb)), (5).to_bytes(4, "little") + b"hello"
    )
