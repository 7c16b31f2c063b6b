"""Tensor-model backends: one call runs named numpy inputs through a model and gives named outputs.

PyTorch (eager, CPU or CUDA) runs models `maas train` exported and users' torch.export / TorchScript
programs; ONNX Runtime runs .onnx graphs (`maas export onnx`, or a user's file). `open_backend`
picks one for a path.

b = open_backend("runs/cnn-digits/model")                       # TorchBackend
b.infer({"input": np.zeros((2, 1, 8, 8), np.float32)})         # {"scores": (2, 10) float32}
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from maas.engine.device import pick_device
from maas.errors import InvalidRequestError, ModelFormatError
from maas.formats.detect import model_format
from maas.models.signature import DATATYPES, Signature

log = logging.getLogger("maas.engine")

BACKENDS = ("auto", "torch", "onnxruntime")


class TensorBackend(Protocol):
    """What the tensor engine needs of a backend."""

    platform: str  # the v2 metadata `platform`: pytorch_libtorch | onnxruntime_onnx
    signature: Signature

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output for one batch of checked inputs."""
        ...

    def memory_bytes(self) -> int:
        """Bytes the model takes."""
        ...


class TorchBackend:
    """An nn.Module in eager mode (given in eval mode); inputs are passed positionally in signature order."""

    platform = "pytorch_libtorch"

    def __init__(self, module: torch.nn.Module, signature: Signature, device: str = "cpu"):
        self.device = pick_device(device)
        self.module = module.to(self.device)
        self.signature = signature

    @torch.inference_mode()
    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output for one batch."""
        args = [_tensor(inputs[t.name], self.device) for t in self.signature.inputs]
        out = self.module(*args)
        outs = out if isinstance(out, tuple | list) else (out,)
        if len(outs) != len(self.signature.outputs):
            raise ModelFormatError(
                f"the model gave {len(outs)} outputs; its signature names {len(self.signature.outputs)}"
            )
        return {
            t.name: o.detach().cpu().numpy().astype(DATATYPES[t.datatype], copy=False)
            for t, o in zip(self.signature.outputs, outs, strict=True)
        }

    def memory_bytes(self) -> int:
        """Bytes of parameters and buffers."""
        ts = [*self.module.parameters(), *self.module.buffers()]
        return sum(t.numel() * t.element_size() for t in ts)


def _tensor(a: np.ndarray, device: torch.device) -> torch.Tensor:
    if not a.flags.writeable:  # arrays over request bytes are read-only; torch wants to own writable memory
        a = a.copy()
    return torch.from_numpy(a).to(device)


class OrtBackend:
    """An ONNX graph in an ONNX Runtime session (CUDA provider when asked for and present)."""

    platform = "onnxruntime_onnx"

    def __init__(self, path: str | Path, signature: Signature, device: str = "cpu", threads: int = 0):
        import onnxruntime as ort

        from maas.formats.onnx import onnx_file

        self.path = onnx_file(path)
        opts = ort.SessionOptions()
        if threads > 0:
            opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # Idle intra-op threads sleep instead of spinning: a server's forward passes are short and
        # far apart, and spinning threads take the cores the HTTP side needs.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        dev = pick_device(device)
        providers = ["CPUExecutionProvider"]
        if dev.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as e:  # ORT's own exception types: a corrupt or unsupported graph
            raise ModelFormatError(f"ONNX Runtime cannot load {str(self.path)!r}: {e}") from None
        self.signature = signature
        self._names = [o.name for o in self.session.get_outputs()]

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output for one batch (BYTES go to ONNX Runtime as UTF-8 strings, its string type)."""
        feed = {n: _strings(n, a) if a.dtype == object else a for n, a in inputs.items()}
        outs = self.session.run(self._names, feed)
        return {n: _bytes(o) if o.dtype == object else o for n, o in zip(self._names, outs, strict=True)}

    def memory_bytes(self) -> int:
        """The graph file's size (its weights)."""
        return os.path.getsize(self.path)


def _strings(name: str, a: np.ndarray) -> np.ndarray:
    try:
        return np.vectorize(lambda b: b.decode("utf-8") if isinstance(b, bytes) else str(b), otypes=[object])(
            a
        )
    except UnicodeDecodeError:
        raise InvalidRequestError(
            f"input {name!r}: BYTES for this ONNX model must be UTF-8 text", param=name
        ) from None


def _bytes(a: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda s: s.encode("utf-8") if isinstance(s, str) else s, otypes=[object])(a)


def open_backend(
    path: str | Path, backend: str = "auto", device: str = "cpu", threads: int = 0
) -> TensorBackend:
    """The backend for a model path: ONNX Runtime for ONNX graphs, PyTorch for `maas train` exports."""
    if backend not in BACKENDS:
        raise InvalidRequestError(f"unknown tensor backend {backend!r} (choose from {', '.join(BACKENDS)})")
    p = Path(path)
    if threads > 0:
        torch.set_num_threads(threads)
    fmt = model_format(p)
    if fmt == "onnx":
        if backend == "torch":
            raise InvalidRequestError(f"{str(p)!r} is an ONNX graph: it runs on onnxruntime, not torch")
        from maas.formats.onnx import onnx_signature

        return OrtBackend(p, onnx_signature(p), device, threads)
    if backend == "onnxruntime":
        raise InvalidRequestError(
            f"{str(p)!r} is a PyTorch model; export it (`maas export onnx NAME`) to run it on onnxruntime"
        )
    if fmt == "maas":
        from maas.models.exported import load_servable

        module, sig = load_servable(p)
    else:
        from maas.formats.torch_program import load_program

        module, sig = load_program(p)
    return TorchBackend(module, sig, device)
