"""The v2 data plane on its own, with no transport: health, metadata, configuration and infer over
the gRPC tests' pool of tiny models, errors as maas errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maas.errors import InvalidRequestError, ModelNotFoundError, RequestTimeoutError
from maas.server.v2.codec import InferRequest
from maas.server.v2.dataplane import DataPlane, pool_name
from tests.unit.server.grpc_harness import MODULES, Loop, Servers


def test_a_version_is_a_registry_tag() -> None:
    assert pool_name("clf", None) == pool_name("clf", "") == pool_name("clf", "latest") == "clf"
    assert pool_name("clf", "v2") == "clf:v2"


def test_health_and_metadata(servers: Servers, loop: Loop) -> None:
    plane = DataPlane(servers.pool)
    assert plane.live() and plane.ready()
    assert plane.server_metadata()["extensions"] == ["binary_tensor_data", "model_configuration"]
    assert plane.model_ready("clf") and plane.model_ready("clf", "v2") and not plane.model_ready("chat")
    with pytest.raises(ModelNotFoundError):
        plane.model_ready("nope")
    meta = loop.run(plane.model_metadata("clf"))
    assert meta["versions"] == ["latest", "v2"] and meta["labels"] == ["a", "b", "c"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert "labels" not in loop.run(plane.model_metadata("strings"))
    config = loop.run(plane.model_config("clf", "v2"))
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [4]}]
    assert config["dynamic_batching"]["default_queue_policy"]["max_queue_size"] > 0


def test_infer_gives_the_models_outputs(servers: Servers, loop: Loop) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4) / 10
    out = loop.run(DataPlane(servers.pool).infer("clf", "v2", InferRequest({"input": x})))
    with torch.inference_mode():
        want = MODULES["clf:v2"](torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out["scores"], want, rtol=1e-6)


def test_errors_are_maas_errors(servers: Servers, loop: Loop) -> None:
    x = {"x": np.zeros((1, 1), np.float32)}
    with pytest.raises(RequestTimeoutError):
        loop.run(DataPlane(servers.pool, request_timeout_s=0.2).infer("slow", None, InferRequest(x)))
    with pytest.raises(RequestTimeoutError):  # the request's own timeout, in microseconds
        loop.run(
            DataPlane(servers.pool).infer("slow", None, InferRequest(x, parameters={"timeout": 100_000}))
        )
    with pytest.raises(ModelNotFoundError):
        loop.run(DataPlane(servers.pool).infer("nope", None, InferRequest(x)))
    with pytest.raises(InvalidRequestError, match="not a tensor model"):
        loop.run(DataPlane(servers.pool).model_metadata("chat"))
