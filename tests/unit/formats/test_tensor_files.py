"""A user's tensor-model files: ONNX graphs, torch.export programs and TorchScript modules, their
signatures as the registry records them, and the backends that run them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from maas.engine.tensor.backends import open_backend
from maas.errors import InvalidRequestError, ModelFormatError
from maas.models.signature import Signature
from maas.store.registry import Registry


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).softmax(-1)


@pytest.fixture
def net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


def dynamic() -> tuple[dict[int, object]]:
    return ({0: torch.export.Dim("batch", min=1, max=1024)},)


SIG = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
       "outputs": [{"name": "probs", "datatype": "FP32", "shape": [-1, 3]}], "labels": ["a", "b", "c"]}  # fmt: skip


def test_torch_export_program_signature_is_read_from_the_file(tmp_path, net) -> None:
    torch.export.save(
        torch.export.export(net, (torch.rand(2, 4),), dynamic_shapes=dynamic()), tmp_path / "m.pt2"
    )
    reg = Registry(home=tmp_path / "home")
    info = reg.import_path(tmp_path / "m.pt2", "prog")
    assert (info.family, info.format) == ("torch-export", "torch-export")
    assert info.signature["inputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [-1, 4], "allow_nan": True}
    ]
    assert info.signature["outputs"] == [{"name": "output_0", "datatype": "FP32", "shape": [-1, 3]}]
    b = open_backend(reg.path_for("prog"))
    x = np.random.default_rng(0).random((5, 4), dtype=np.float32)
    np.testing.assert_allclose(
        b.infer({"x": x})["output_0"], net(torch.from_numpy(x)).detach().numpy(), atol=1e-6
    )
    with pytest.raises(InvalidRequestError, match="PyTorch model"):
        open_backend(reg.path_for("prog"), backend="onnxruntime")


def test_torchscript_needs_a_signature_and_then_serves(tmp_path, net) -> None:
    torch.jit.save(torch.jit.trace(net, torch.rand(2, 4)), str(tmp_path / "m.pt"))
    reg = Registry(home=tmp_path / "home")
    with pytest.raises(ModelFormatError, match="--signature"):
        reg.import_path(tmp_path / "m.pt", "scripted")
    d = tmp_path / "with-sig"
    d.mkdir()
    (d / "m.pt").write_bytes((tmp_path / "m.pt").read_bytes())
    (d / "config.json").write_text(json.dumps({"model_type": "torchscript", "signature": SIG}))
    info = reg.import_path(d, "scripted")
    assert info.family == "torchscript" and Signature.from_dict(info.signature).labels == ("a", "b", "c")
    out = open_backend(reg.path_for("scripted")).infer({"x": np.ones((2, 4), np.float32)})
    np.testing.assert_allclose(out["probs"], net(torch.ones(2, 4)).detach().numpy(), atol=1e-6)


def test_onnx_file_signature_and_ort_backend(tmp_path, net) -> None:
    program = torch.onnx.export(net, (torch.rand(2, 4),), dynamo=True, dynamic_shapes=dynamic(),
                                input_names=["x"], output_names=["probs"])  # fmt: skip
    program.save(str(tmp_path / "m.onnx"))
    reg = Registry(home=tmp_path / "home")
    info = reg.import_path(tmp_path / "m.onnx", "graph")
    assert (info.family, info.format) == ("onnx", "onnx")
    assert [t["shape"] for t in info.signature["inputs"]] == [[-1, 4]]
    b = open_backend(reg.path_for("graph"))
    assert b.platform == "onnxruntime_onnx"
    x = np.random.default_rng(1).random((3, 4), dtype=np.float32)
    np.testing.assert_allclose(
        b.infer({"x": x})["probs"], net(torch.from_numpy(x)).detach().numpy(), atol=1e-5
    )
    with pytest.raises(InvalidRequestError, match="ONNX graph"):
        open_backend(reg.path_for("graph"), backend="torch")
    (tmp_path / "bad.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelFormatError, match="not a readable ONNX model"):
        reg.import_path(tmp_path / "bad.onnx", "bad")
