"""An ONNX graph behind KServe's own Python ModelServer (ONNX Runtime on CPU): the KServe side of
benchmarks/tensor_serving.py. Runs in KServe's own venv (its pins clash with maas's):

    .bench-venvs/kserve/bin/python benchmarks/kserve_ort_model.py --onnx model.onnx \
        --model_name cnn-digits --http_port 8080 --threads 2 --enable_grpc false

Answers `POST /v2/models/NAME/infer` (JSON or Triton's binary tensors; KServe reads the
Inference-Header-Content-Length header itself), one request per forward pass (KServe has no
dynamic batching of its own). KServe binds 0.0.0.0 and refuses model versions in the URL.
"""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server
from kserve.utils.numpy_codec import from_np_dtype


class OrtModel(Model):
    """model.onnx in an ONNX Runtime session, v2 tensors in and out."""

    def __init__(self, name: str, path: str, threads: int):
        super().__init__(name)
        self.path = path
        self.threads = threads
        self.session: ort.InferenceSession | None = None
        self.names: list[str] = []

    def load(self) -> bool:
        """Open the session (intra-op threads pinned like maas's --threads)."""
        opts = ort.SessionOptions()
        if self.threads > 0:
            opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, opts, providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.session.get_outputs()]
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        """One forward pass over the request's inputs; outputs binary when the client asked."""
        assert self.session is not None
        feeds = {t.name: t.as_numpy() for t in payload.inputs}
        outs = self.session.run(self.names, feeds)
        tensors = [
            InferOutput(name=n, shape=list(a.shape), datatype=from_np_dtype(a.dtype), data=np.asarray(a))
            for n, a in zip(self.names, outs, strict=True)
        ]
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=tensors,
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )


def main() -> None:
    """Parse KServe's own flags plus --onnx/--threads and serve."""
    ap = argparse.ArgumentParser(parents=[model_server.parser])
    ap.add_argument("--onnx", required=True, help="the .onnx file to serve")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = all cores)")
    args, _ = ap.parse_known_args()
    model = OrtModel(args.model_name, args.onnx, args.threads)
    model.load()
    ModelServer().start([model])


if __name__ == "__main__":
    main()
