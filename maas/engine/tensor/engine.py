"""TensorEngine: a tensor model (classifier, any ONNX graph) behind the dynamic batcher.

Requests are checked against the model's signature, then stacked on the batch axis with the other
requests queued at the same time (those whose non-batch shapes match), run in one forward pass,
and split back, like Triton's dynamic batching.

engine = TensorEngine(open_backend("runs/cnn-digits/model"), TensorOptions(max_batch_size=32))
out = await engine.infer({"input": images})      # {"scores": (N, 10) float32}
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from maas.engine.batcher import Batched, DynamicBatcher
from maas.engine.tensor.backends import TensorBackend, open_backend
from maas.errors import InvalidRequestError
from maas.models.signature import Signature

log = logging.getLogger("maas.engine")

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class TensorOptions:
    """How a served tensor model batches (Triton's dynamic_batching) and where it runs."""

    max_batch_size: int = 64  # rows per forward pass, and the most one request may send
    max_wait_ms: float = 0.0  # how long a batch waits for more requests (Triton's max_queue_delay)
    preferred: tuple[int, ...] = ()  # batch sizes that go at once without waiting
    max_queue: int = 1024  # requests waiting; more get 429
    backend: str = "auto"  # auto | torch | onnxruntime
    threads: int = 0
    device: str = "cpu"


class TensorEngine(Batched):
    """A backend behind a batching worker; `await infer(inputs)` from any event loop."""

    def __init__(self, backend: TensorBackend, options: TensorOptions | None = None):
        o = options or TensorOptions()
        if (
            o.max_batch_size < 1
            or o.max_wait_ms < 0
            or any(p < 1 or p > o.max_batch_size for p in o.preferred)
        ):
            raise InvalidRequestError(
                "tensor batching: max batch size >= 1, max wait >= 0, preferred sizes within 1..max batch size"
            )
        self.backend = backend
        self.signature: Signature = backend.signature
        self.platform = backend.platform
        self.options = o
        self.max_batch_size = o.max_batch_size if self.signature.batched else None
        self.batcher: DynamicBatcher[Arrays, Arrays] = DynamicBatcher(
            self._run,
            name="tensor",
            max_batch_size=o.max_batch_size if self.signature.batched else 1,
            max_wait_s=o.max_wait_ms / 1000,
            preferred=o.preferred,
            max_queue=o.max_queue,
        )

    @classmethod
    def from_path(cls, path: str, options: TensorOptions | None = None) -> TensorEngine:
        """Open a model path with the backend the options ask for (auto: by file type)."""
        o = options or TensorOptions()
        return cls(open_backend(path, o.backend, o.device, o.threads), o)

    # -- facts ---------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """True while the batching worker runs."""
        return self.batcher.alive

    def stats(self) -> dict[str, float]:
        """Queued requests and totals since start."""
        s = self.batcher.stats_
        return {"queued": self.batcher.queued, "requests": s.requests, "rows": s.rows, "batches": s.batches}

    def memory_bytes(self) -> int:
        """Bytes the model takes."""
        return self.backend.memory_bytes()

    # -- callers -------------------------------------------------------------------------------

    def check(self, inputs: Arrays, outputs: list[str] | None = None) -> list[str]:
        """Check inputs against the signature; the output names to return."""
        self.signature.check(inputs, self.max_batch_size)
        return self.signature.output_names(outputs)

    async def infer(self, inputs: Arrays, outputs: list[str] | None = None) -> Arrays:
        """The requested outputs (all by default) for checked-or-not inputs, batched with others."""
        names = self.check(inputs, outputs)
        if self.signature.batched:
            rows = next(iter(inputs.values())).shape[0]
            key = tuple((n, a.shape[1:]) for n, a in sorted(inputs.items()))  # what may be stacked together
        else:
            rows, key = 1, None
        (out,) = await self.batcher.submit([(inputs, rows)], key)
        return {n: out[n] for n in names}

    def infer_sync(self, inputs: Arrays, outputs: list[str] | None = None) -> Arrays:
        """The same checks and backend call without batching (`maas predict`)."""
        names = self.check(inputs, outputs)
        out = self._run([inputs])[0]
        return {n: out[n] for n in names}

    def shutdown(self) -> None:
        """Stop the worker after the batch in progress."""
        self.batcher.close()

    # -- worker --------------------------------------------------------------------------------

    def _run(self, requests: list[Arrays]) -> list[Arrays]:
        if len(requests) == 1:
            return [self.backend.infer(requests[0])]
        names = [t.name for t in self.signature.inputs]
        stacked = {n: np.concatenate([r[n] for r in requests]) for n in names}  # (sum rows, ...)
        out = self.backend.infer(stacked)
        rows = [r[names[0]].shape[0] for r in requests]
        if any(a.ndim == 0 or a.shape[0] != sum(rows) for a in out.values()):
            # an output whose first axis is not the batch (a reduction, a list of detections):
            # stacking does not apply to this model, so it runs one request at a time from now on
            log.warning("%s: an output's first axis is not the batch; batching turned off", self.platform)
            self.batcher.max_batch_size = 1
            return [self.backend.infer(r) for r in requests]
        cuts = np.cumsum(rows)[:-1]
        split = {n: np.split(a, cuts) for n, a in out.items()}
        return [{n: parts[i] for n, parts in split.items()} for i in range(len(requests))]
