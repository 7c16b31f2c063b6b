"""What the gRPC tests share: a pool of tiny models (torch classifiers, a BYTES/BOOL model, a slow
one, an LLM spec) behind gRPC servers on loopback, run on a background event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from maas.engine.tensor.backends import TorchBackend
from maas.engine.tensor.engine import TensorEngine
from maas.models.signature import Signature, TensorSpec, classifier_signature
from maas.server.auth import KeyRing
from maas.server.caller import Callers
from maas.server.metrics import Metrics
from maas.server.pool import ModelPool
from maas.server.ratelimit import RateLimiter
from maas.server.state import ModelSpec, ServedModel
from maas.server.v2.dataplane import DataPlane
from maas.server.v2.grpc import GrpcServer

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
        plane = DataPlane(self.pool)
        keyed = Callers(KeyRing.build(["secret"], []), RateLimiter(requests_per_min=2), self.metrics)
        self.servers = {
            "open": GrpcServer(plane, self.callers(), 32 << 20),
            "keyed": GrpcServer(plane, keyed, 32 << 20),
            "small": GrpcServer(DataPlane(self.pool, request_timeout_s=0.2), self.callers(), 4096),
        }
        for s in self.servers.values():
            loop.run(s.start("127.0.0.1", 0))

    def callers(self) -> Callers:
        """No keys, no limits, this pool's metrics."""
        return Callers(KeyRing(), RateLimiter(), self.metrics)

    def client(self, which: str = "open") -> tc.InferenceServerClient:
        return tc.InferenceServerClient(f"127.0.0.1:{self.servers[which].port}")


def fp32_input(x: np.ndarray, name: str = "input") -> tc.InferInput:
    i = tc.InferInput(name, list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    return i


def rpc_error(fn: Any, *args: Any, **kwargs: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as e:
        fn(*args, **kwargs)
    return e.value
