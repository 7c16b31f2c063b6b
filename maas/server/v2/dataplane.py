"""The Open Inference Protocol v2's data plane (as KServe's DataPlane): health, metadata,
configuration and inference of tensor models over the model pool, with no transport in sight.

HTTP (v2/http.py) and gRPC (v2/grpc.py) decode their requests into an InferRequest, call these
methods and encode what comes back; errors are MaasError subclasses each transport maps to its
own status. A model version is a registry tag: model NAME, version TAG is the pool's NAME:TAG
(no version, or "latest", is NAME).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import NotRequired, TypedDict

import numpy as np

from maas import __version__
from maas.engine.protocol import TensorClient
from maas.errors import RequestTimeoutError
from maas.models.signature import TensorSpec
from maas.server.pool import ModelPool
from maas.server.v2.codec import InferRequest, timeout_s

EXTENSIONS = ["binary_tensor_data", "model_configuration"]


class ServerMetadata(TypedDict):
    """The server's name, version and protocol extensions."""

    name: str
    version: str
    extensions: list[str]


class TensorMetadata(TypedDict):
    """One tensor of a model's metadata (-1 in a shape: any size)."""

    name: str
    datatype: str
    shape: list[int]


class ModelParameters(TypedDict):
    """The model metadata's parameters."""

    max_batch_size: int


class ModelMetadata(TypedDict):
    """A tensor model's v2 metadata."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    labels: NotRequired[list[str]]
    parameters: ModelParameters


class _Labels(TypedDict, total=False):
    labels: list[str]


class ConfigTensor(TypedDict):
    """One tensor of Triton's model configuration (dims without the batch axis when batching)."""

    name: str
    data_type: str
    dims: list[int]


class QueuePolicy(TypedDict):
    """Triton's default queue policy."""

    max_queue_size: int


class DynamicBatching(TypedDict):
    """Triton's dynamic batching settings."""

    max_queue_delay_microseconds: int
    preferred_batch_size: list[int]
    default_queue_policy: QueuePolicy


class ModelConfig(TypedDict):
    """Triton's model configuration (its `model_configuration` extension)."""

    name: str
    platform: str
    backend: str
    max_batch_size: int
    input: list[ConfigTensor]
    output: list[ConfigTensor]
    dynamic_batching: NotRequired[DynamicBatching]


def pool_name(model: str, version: str | None) -> str:
    """The pool name of a v2 model (and version = registry tag)."""
    return model if version in (None, "", "latest") else f"{model}:{version}"


def _tensor(t: TensorSpec) -> TensorMetadata:
    return {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}


def _config_tensors(specs: Sequence[TensorSpec], batched: bool) -> list[ConfigTensor]:
    return [{"name": t.name, "data_type": "TYPE_STRING" if t.datatype == "BYTES" else f"TYPE_{t.datatype}",
             "dims": list(t.shape[1:] if batched else t.shape)} for t in specs]  # fmt: skip


class DataPlane:
    """The v2 calls over a model pool; `request_timeout_s` (0 = none) bounds each infer."""

    def __init__(self, pool: ModelPool, request_timeout_s: float = 0.0):
        self.pool, self.request_timeout_s = pool, request_timeout_s

    # -- health -------------------------------------------------------------------------------

    def live(self) -> bool:
        """True while the process serves."""
        return True

    def ready(self) -> bool:
        """True once the start-up models are loaded and every loaded engine runs."""
        return self.pool.ready and all(m.engine.alive for m in self.pool.loaded())

    def model_ready(self, model: str, version: str | None = None) -> bool:
        """True when the tensor model is loaded (ModelNotFoundError when unknown; False when it is
        servable but not loaded: it loads on first use)."""
        spec, loaded = self.pool.spec(pool_name(model, version))
        return loaded and spec.kind == "tensor"

    # -- metadata -----------------------------------------------------------------------------

    def server_metadata(self) -> ServerMetadata:
        """Name, version and protocol extensions."""
        return {"name": "maas", "version": __version__, "extensions": list(EXTENSIONS)}

    async def model_metadata(self, model: str, version: str | None = None) -> ModelMetadata:
        """A tensor model's inputs, outputs, platform, versions and class labels (loading it if needed)."""
        async with self._engine(pool_name(model, version)) as eng:
            sig = eng.signature
            labels: _Labels = {} if sig.labels is None else {"labels": list(sig.labels)}
            return {
                "name": model,
                "versions": self._versions(model) or [version or "latest"],
                "platform": eng.platform,
                "inputs": [_tensor(t) for t in sig.inputs],
                "outputs": [_tensor(t) for t in sig.outputs],
                **labels,
                "parameters": {"max_batch_size": eng.max_batch_size or 0},
            }

    async def model_config(self, model: str, version: str | None = None) -> ModelConfig:
        """Triton's model configuration (what tritonclient's get_model_config reads)."""
        async with self._engine(pool_name(model, version)) as eng:
            batched = eng.max_batch_size is not None
            config: ModelConfig = {
                "name": model,
                "platform": eng.platform,
                "backend": "onnxruntime" if eng.platform == "onnxruntime_onnx" else "pytorch",
                "max_batch_size": eng.max_batch_size or 0,
                "input": _config_tensors(eng.signature.inputs, batched),
                "output": _config_tensors(eng.signature.outputs, batched),
            }
            if batched:
                o = eng.options
                config["dynamic_batching"] = {
                    "max_queue_delay_microseconds": int(o.max_wait_ms * 1000),
                    "preferred_batch_size": list(o.preferred),
                    "default_queue_policy": {"max_queue_size": o.max_queue},
                }
            return config

    # -- inference ----------------------------------------------------------------------------

    async def infer(self, model: str, version: str | None, request: InferRequest) -> dict[str, np.ndarray]:
        """The outputs of one decoded request, within its `timeout` parameter or the server's request
        timeout, whichever is shorter (RequestTimeoutError past it)."""
        timeout = timeout_s(request.parameters, self.request_timeout_s)
        async with self._engine(pool_name(model, version)) as eng:
            work = eng.infer(request.inputs, request.outputs)
            try:
                return await (asyncio.wait_for(work, timeout) if timeout > 0 else work)
            except TimeoutError:
                raise RequestTimeoutError("the request ran past the server's request timeout") from None

    # -- helpers ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _engine(self, name: str) -> AsyncIterator[TensorClient]:
        """The tensor model `name`'s engine, leased (loaded if needed) for the block."""
        lease = await self.pool.acquire(name, "tensor")
        try:
            yield lease.model.tensor()
        finally:
            lease.release()

    def _versions(self, model: str) -> list[str]:
        out = []
        for spec, _ in self.pool.specs():
            name, _, tag = spec.name.partition(":")
            if name == model and spec.kind == "tensor":
                out.append(tag or "latest")
        return sorted(out)
