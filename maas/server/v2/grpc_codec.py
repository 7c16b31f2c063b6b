"""Open Inference Protocol v2 gRPC messages (grpc_v2.proto) and their tensors as numpy arrays.

The message classes live in a private descriptor pool, so they never clash with another package's
`inference.*` classes (tritonclient's) in protobuf's default pool. Inputs come from
`raw_input_contents` (one entry per input, little-endian; BYTES elements length-prefixed), as
tritonclient sends them, or from typed `contents`; outputs go out in `raw_output_contents`.

req = decode_infer_request(ModelInferRequest.FromString(data))     # an InferRequest (v2/codec.py)
resp = encode_infer_response("digits", "", outputs, req, {})       # a ModelInferResponse
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf import descriptor_pool, message_factory

from maas.errors import InvalidRequestError
from maas.models.signature import datatype_of
from maas.server.v2.codec import (
    InferRequest,
    check_output_parameters,
    check_parameters,
    refuse_shared_memory,
    tensor_count,
    tensor_from_list,
    tensor_from_raw,
    tensor_to_raw,
)
from maas.server.v2.grpc_descriptor import FILE_DESCRIPTOR

SERVICE = "inference.GRPCInferenceService"

_POOL = descriptor_pool.DescriptorPool()
_POOL.AddSerializedFile(FILE_DESCRIPTOR)


def _message(name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"inference.{name}"))


ServerLiveRequest = _message("ServerLiveRequest")
ServerLiveResponse = _message("ServerLiveResponse")
ServerReadyRequest = _message("ServerReadyRequest")
ServerReadyResponse = _message("ServerReadyResponse")
ModelReadyRequest = _message("ModelReadyRequest")
ModelReadyResponse = _message("ModelReadyResponse")
ServerMetadataRequest = _message("ServerMetadataRequest")
ServerMetadataResponse = _message("ServerMetadataResponse")
ModelMetadataRequest = _message("ModelMetadataRequest")
ModelMetadataResponse = _message("ModelMetadataResponse")
ModelInferRequest = _message("ModelInferRequest")
ModelInferResponse = _message("ModelInferResponse")

# The typed contents field of each datatype, and the numpy dtype of that field's values.
_CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_FIELD_DTYPES = {
    "bool_contents": np.bool_,
    "int_contents": np.int32,
    "int64_contents": np.int64,
    "uint_contents": np.uint32,
    "uint64_contents": np.uint64,
    "fp32_contents": np.float32,
    "fp64_contents": np.float64,
}


def parameters_of(params: Any) -> dict[str, Any]:
    """A map<string, InferParameter> as a plain dict (an unset parameter is None)."""
    out: dict[str, Any] = {}
    for key, p in params.items():
        which = p.WhichOneof("parameter_choice")
        out[key] = getattr(p, which) if which else None
    return out


def set_parameters(target: Any, params: dict[str, Any]) -> None:
    """Fill a map<string, InferParameter> from a dict of bool, int, float or string values."""
    for key, v in params.items():
        p = target[key]
        if isinstance(v, bool):
            p.bool_param = v
        elif isinstance(v, int) and v >= 2**63:
            p.uint64_param = v
        elif isinstance(v, int):
            p.int64_param = v
        elif isinstance(v, float):
            p.double_param = v
        elif v is not None:
            p.string_param = str(v)


def decode_infer_request(msg: Any) -> InferRequest:
    """A ModelInferRequest's inputs (numpy arrays), output names, parameters and id."""
    params = parameters_of(msg.parameters)
    check_parameters(params)
    if not msg.inputs:
        raise InvalidRequestError("the request has no inputs")
    raw = msg.raw_input_contents
    if raw and len(raw) != len(msg.inputs):
        raise InvalidRequestError(
            f"raw_input_contents has {len(raw)} entries for {len(msg.inputs)} inputs; "
            "give one per input, in input order"
        )
    req = InferRequest({}, msg.id or None, params)
    for i, t in enumerate(msg.inputs):
        name = t.name
        if not name:
            raise InvalidRequestError(f"inputs[{i}] has no name")
        if name in req.inputs:
            raise InvalidRequestError(f"input {name!r} is given twice", param=name)
        refuse_shared_memory("input", name, parameters_of(t.parameters))
        shape = list(t.shape)
        count = tensor_count(name, t.datatype, shape)
        if raw:
            if t.HasField("contents"):
                raise InvalidRequestError(
                    f"input {name!r} has contents while the request uses raw_input_contents", param=name
                )
            req.inputs[name] = tensor_from_raw(name, t.datatype, shape, count, memoryview(raw[i]))
        else:
            req.inputs[name] = _from_contents(name, t.datatype, shape, count, t.contents)
    if msg.outputs:
        req.outputs = []
        for o in msg.outputs:
            op = parameters_of(o.parameters)
            check_output_parameters(o.name, op)
            req.outputs.append(o.name)
    return req


def _from_contents(name: str, dt: str, shape: list[int], count: int, contents: Any) -> np.ndarray:
    """An input's array from its typed contents (the one field of its datatype)."""
    field = _CONTENTS.get(dt)
    if field is None:
        raise InvalidRequestError(
            f"input {name!r}: {dt} has no typed contents field; send it in raw_input_contents", param=name
        )
    others = [f.name for f, _ in contents.ListFields() if f.name != field]
    if others:
        raise InvalidRequestError(
            f"input {name!r}: {dt} data goes in contents.{field}, not contents.{others[0]}", param=name
        )
    values = getattr(contents, field)
    if dt == "BYTES":
        if len(values) != count:
            raise InvalidRequestError(
                f"input {name!r} has {len(values)} values; shape {shape} needs {count}", param=name
            )
        arr = np.empty(count, dtype=object)
        arr[:] = list(values)
        return arr.reshape(shape)
    return tensor_from_list(name, dt, shape, count, np.asarray(values, dtype=_FIELD_DTYPES[field]))


def encode_infer_response(
    model: str, version: str, outputs: dict[str, np.ndarray], req: InferRequest, parameters: dict[str, Any]
) -> Any:
    """A ModelInferResponse carrying `outputs` in raw_output_contents (in their order), with the
    request's id and the given parameters."""
    resp = ModelInferResponse(model_name=model, model_version=version, id=req.id or "")
    for name, a in outputs.items():
        dt = datatype_of(a.dtype)
        resp.outputs.add(name=name, datatype=dt, shape=list(a.shape))
        resp.raw_output_contents.append(tensor_to_raw(a, dt))
    set_parameters(resp.parameters, parameters)
    return resp
