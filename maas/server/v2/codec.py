"""Open Inference Protocol v2 tensors on the wire: JSON (flat or nested data) and Triton's binary
extension (a JSON header of `Inference-Header-Content-Length` bytes, then raw little-endian tensors
in input order; BYTES elements each prefixed by a 4-byte length). Numpy arrays in and out, with no
per-element Python for binary numeric tensors (BYTES elements are read one by one).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from maas.errors import InvalidRequestError, PayloadTooLargeError
from maas.models.signature import DATATYPES, datatype_of

_SEQUENCE_PARAMS = ("sequence_id", "sequence_start", "sequence_end")
_ACCEPTS = {  # numpy kinds JSON data may have for each datatype family
    "b": "b",
    "i": "iu",
    "u": "iu",
    "f": "iuf",
}


@dataclass
class InferRequest:
    """A decoded infer request."""

    inputs: dict[str, np.ndarray]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] | None = None  # None: every output
    binary: set[str] = field(default_factory=set)  # outputs asked for as binary data
    binary_default: bool = False  # `binary_data_output`: outputs not named in `outputs` are binary

    @property
    def echo_parameters(self) -> dict[str, Any]:
        """The request parameters a response carries back (not the transport's binary_data_output)."""
        return {k: v for k, v in self.parameters.items() if k != "binary_data_output"}


def decode_body(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo a gzip / deflate Content-Encoding (tritonclient's request compression); more than
    `limit` bytes once inflated is a PayloadTooLargeError, as a plain body that size would be."""
    if not encoding or encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise InvalidRequestError(f"unsupported Content-Encoding {encoding!r} (gzip, deflate)")
    d = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as e:
        raise InvalidRequestError(f"the body is not valid {encoding} data: {e}") from None
    if len(out) > limit:
        raise PayloadTooLargeError(f"the request body inflates to over the limit of {limit} bytes")
    if not d.eof:
        raise InvalidRequestError(f"the body is not valid {encoding} data: it ends early")
    return out


def decode_request(body: bytes, header_length: str | None) -> InferRequest:
    """Parse an infer request body (JSON, or JSON + binary tensors)."""
    n = len(body)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > n:
            raise InvalidRequestError(
                f"Inference-Header-Content-Length {header_length!r} is not a length within the {n}-byte body"
            )
        n = int(header_length)
    try:
        doc = orjson.loads(body[:n])
    except orjson.JSONDecodeError as e:
        raise InvalidRequestError(f"the request body is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise InvalidRequestError('the request must be a JSON object with a non-empty "inputs" list')
    params = _params(doc.get("parameters"), "parameters")
    check_parameters(params)
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise InvalidRequestError('"id" must be a string')
    req = InferRequest({}, rid, params, binary_default=params.get("binary_data_output") is True)
    offset = n
    for i, t in enumerate(doc["inputs"]):
        name, arr, used = _input(t, i, body, offset)
        if name in req.inputs:
            raise InvalidRequestError(f"input {name!r} is given twice", param=name)
        req.inputs[name] = arr
        offset += used
    if offset != len(body):
        raise InvalidRequestError(
            f"the body has {len(body) - offset} bytes beyond the binary tensors its header announces"
        )
    outs = doc.get("outputs")
    if outs is not None:
        if not isinstance(outs, list):
            raise InvalidRequestError('"outputs" must be a list')
        req.outputs = []
        for o in outs:
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise InvalidRequestError('each of "outputs" must be an object with a "name"')
            op = _params(o.get("parameters"), f"outputs.{o['name']}.parameters")
            check_output_parameters(o["name"], op)
            req.outputs.append(o["name"])
            if op.get("binary_data", req.binary_default):
                req.binary.add(o["name"])
    return req


def check_parameters(params: dict[str, Any]) -> None:
    """Refuse request parameters that would change the answer and are not supported (sequences);
    `timeout` (microseconds, Triton's meaning) must be a positive integer."""
    for p in _SEQUENCE_PARAMS:
        if p in params:
            raise InvalidRequestError(f"parameter {p!r}: sequence batching is not supported for this model")
    t = params.get("timeout")
    if t is not None and (not isinstance(t, int) or isinstance(t, bool) or t <= 0):
        raise InvalidRequestError("parameter 'timeout' must be a positive number of microseconds")


def timeout_s(params: dict[str, Any], server_s: float) -> float:
    """The request's time limit in seconds: its `timeout` parameter or the server's, whichever is
    shorter (0 = none)."""
    t = params.get("timeout")
    if t is None:
        return server_s
    return t / 1e6 if server_s <= 0 else min(server_s, t / 1e6)


def refuse_shared_memory(what: str, name: str, params: dict[str, Any]) -> None:
    """Shared-memory regions are not supported: a 400 rather than an empty or unread region."""
    if any(k.startswith("shared_memory_") for k in params):
        raise InvalidRequestError(
            f"{what} {name!r}: shared memory is not supported; send the tensor in the request", param=name
        )


def check_output_parameters(name: str, params: dict[str, Any]) -> None:
    """Refuse output parameters that are not supported (the classification extension, shared memory)."""
    refuse_shared_memory("output", name, params)
    if params.get("classification"):
        raise InvalidRequestError(
            f"output {name!r}: the classification extension is not supported; "
            "ask for the scores (the class labels are in the model metadata)",
            param=name,
        )


def tensor_count(name: str, dt: Any, shape: Any) -> int:
    """Elements of an input tensor of datatype `dt` and `shape` (InvalidRequestError naming it when
    the datatype is unknown or the shape is not a list of non-negative integers)."""
    if dt not in DATATYPES:
        raise InvalidRequestError(
            f"input {name!r}: datatype {dt!r} is not one of {', '.join(DATATYPES)}", param=name
        )
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidRequestError(
            f"input {name!r}: shape must be a list of non-negative integers", param=name
        )
    return math.prod(shape)


def _params(p: Any, where: str) -> dict[str, Any]:
    if p is None:
        return {}
    if not isinstance(p, dict):
        raise InvalidRequestError(f'"{where}" must be an object')
    return p


def _input(t: Any, i: int, body: bytes, offset: int) -> tuple[str, np.ndarray, int]:
    """(name, array, binary bytes consumed) for the i-th input object."""
    if not isinstance(t, dict) or not isinstance(t.get("name"), str):
        raise InvalidRequestError(f"inputs[{i}] must be an object with a string name")
    name = t["name"]
    dt: Any = t.get("datatype")
    shape: Any = t.get("shape")
    count = tensor_count(name, dt, shape)  # both checked there
    params = _params(t.get("parameters"), f"inputs.{name}.parameters")
    refuse_shared_memory("input", name, params)
    size = params.get("binary_data_size")
    if size is not None:
        if "data" in t:
            raise InvalidRequestError(f"input {name!r} has both data and binary_data_size", param=name)
        if not isinstance(size, int) or size < 0 or offset + size > len(body):
            raise InvalidRequestError(
                f"input {name!r}: binary_data_size {size!r} runs past the end of the body", param=name
            )
        raw = memoryview(body)[offset : offset + size]
        return name, tensor_from_raw(name, dt, shape, count, raw), size
    if "data" not in t:
        raise InvalidRequestError(f"input {name!r} has no data (nor binary_data_size)", param=name)
    return name, tensor_from_list(name, dt, shape, count, t["data"]), 0


def tensor_from_raw(name: str, dt: str, shape: list[int], count: int, raw: memoryview) -> np.ndarray:
    """An input's array from its raw bytes (little-endian; BYTES elements length-prefixed)."""
    if dt == "BYTES":
        items: list[bytes] = []
        pos = 0
        while pos < len(raw):
            if pos + 4 > len(raw):
                raise InvalidRequestError(f"input {name!r}: a BYTES element's length is cut off", param=name)
            n = int.from_bytes(raw[pos : pos + 4], "little")
            if pos + 4 + n > len(raw):
                raise InvalidRequestError(f"input {name!r}: a BYTES element runs past its data", param=name)
            items.append(bytes(raw[pos + 4 : pos + 4 + n]))
            pos += 4 + n
        if len(items) != count:
            raise InvalidRequestError(
                f"input {name!r} has {len(items)} BYTES elements; shape {shape} needs {count}", param=name
            )
        arr = np.empty(count, dtype=object)
        arr[:] = items
        return arr.reshape(shape)
    dtype = DATATYPES[dt].newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise InvalidRequestError(
            f"input {name!r} has {len(raw)} bytes of data; shape {shape} of {dt} needs {count * dtype.itemsize}",
            param=name,
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def tensor_from_list(name: str, dt: str, shape: list[int], count: int, data: Any) -> np.ndarray:
    """An input's array from a list of values (flat or nested), checked against its datatype."""
    try:
        raw = np.asarray(data)
    except ValueError:
        raise InvalidRequestError(
            f"input {name!r}: data is not a regular (non-ragged) array", param=name
        ) from None
    if raw.dtype == object:
        raise InvalidRequestError(f"input {name!r}: data is ragged or mixes types", param=name)
    if raw.size != count:
        raise InvalidRequestError(
            f"input {name!r} has {raw.size} values; shape {shape} needs {count}", param=name
        )
    if dt == "BYTES":
        if raw.size and raw.dtype.kind != "U":
            raise InvalidRequestError(f"input {name!r}: BYTES data must be strings", param=name)
        arr = np.empty(count, dtype=object)
        arr[:] = [s.encode("utf-8") for s in raw.ravel().tolist()]
        return arr.reshape(shape)
    want = DATATYPES[dt]
    kind = raw.dtype.kind
    if raw.size and kind not in _ACCEPTS[want.kind] and not (want.kind in "iu" and kind == "f"):
        got = "strings" if kind in "US" else "booleans" if kind == "b" else "numbers"
        raise InvalidRequestError(f"input {name!r}: {dt} data cannot be {got}", param=name)
    if want.kind in "iu" and raw.size:
        if kind == "f" and not np.array_equal(raw, np.floor(raw)):
            raise InvalidRequestError(f"input {name!r}: {dt} data must be integers", param=name)
        info = np.iinfo(want)
        try:  # from the parsed Python numbers: exact where numpy's guess (float64) is not, e.g. 2**63
            exact = np.asarray(data, dtype=want)
        except (OverflowError, ValueError):
            exact = None
        if exact is None or raw.min() < info.min or raw.max() > info.max:
            raise InvalidRequestError(f"input {name!r}: values outside {dt}'s range", param=name)
        return exact.reshape(shape)
    return raw.astype(want, copy=False).reshape(shape)


def encode_response(
    model: str,
    version: str | None,
    outputs: dict[str, np.ndarray],
    req: InferRequest,
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """(body, JSON header length when binary tensors follow it) of an infer response."""
    chunks: list[bytes] = []
    outs: list[dict[str, Any]] = []
    for name, a in outputs.items():
        dt = datatype_of(a.dtype)
        o: dict[str, Any] = {"name": name, "datatype": dt, "shape": list(a.shape)}
        binary = name in req.binary or (
            req.binary_default and (req.outputs is None or name not in req.outputs)
        )
        if binary:
            raw = tensor_to_raw(a, dt)
            o["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif dt == "BYTES":
            o["data"] = [_text(x) for x in a.ravel().tolist()]
        else:
            o["data"] = a.ravel().tolist()
        outs.append(o)
    doc: dict[str, Any] = {"model_name": model, "outputs": outs}
    if version is not None:
        doc["model_version"] = version
    if req.id is not None:
        doc["id"] = req.id
    if parameters:
        doc["parameters"] = parameters
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return head, None
    return b"".join([head, *chunks]), len(head)


def tensor_to_raw(a: np.ndarray, dt: str) -> bytes:
    """An output's raw bytes (little-endian; BYTES elements length-prefixed)."""
    if dt == "BYTES":
        parts = []
        for x in a.ravel().tolist():
            b = x if isinstance(x, bytes) else str(x).encode("utf-8")
            parts += [len(b).to_bytes(4, "little"), b]
        return b"".join(parts)
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()


def _text(x: Any) -> str:
    return x.decode("utf-8", errors="replace") if isinstance(x, bytes) else str(x)
