"""Tensor models end to end: `maas train` -> registry -> `maas serve` -> the official tritonclient
(v2 HTTP, JSON and binary tensors), ONNX export served by ONNX Runtime, dynamic batching, bad input."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from maas.models.exported import load_exported, load_servable
from maas.store.registry import Registry
from tests.integration.conftest import Server, free_port, start_server, stop_server

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("cnn-digits", "lstm-digits", "mlp-wine")


def maas(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "maas.cli.main", *args], capture_output=True, text=True, env=env,
                       timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def home() -> Iterator[dict[str, str]]:
    """A registry with the three shipped configs trained briefly (accuracy does not matter here)."""
    with tempfile.TemporaryDirectory(prefix="maas-tensor-") as h:
        env = {**os.environ, "MAAS_HOME": h}
        out = Path(h) / "runs"
        for cfg, extra in (("cnn-digits", ["train.steps=60"]), ("lstm-digits", ["train.steps=30"]),
                           ("mlp-wine", ["train.steps=40", "train.folds=null"])):  # fmt: skip
            sets = [x for s in [*extra, f"output.dir={out / cfg}"] for x in ("--set", s)]
            maas("train", str(ROOT / f"configs/{cfg}.yaml"), *sets, env=env)
        maas("export", "onnx", "cnn-digits", env=env)
        maas("export", "onnx", "lstm-digits", env=env)
        maas("export", "onnx", "mlp-wine", env=env)
        for parent, method, ref in QUANTIZED:  # torch: weight-only codes; ONNX: ONNX Runtime's int8
            maas("quantize", parent, "--method", method, "--name", ref, env=env)
        yield env


GRPC_PORT = free_port()
# (float parent, method, quantized version); ONNX graphs: static int8 (CNN, MLP: its calibration rows are
# raw CSV columns, the graph standardises them), dynamic (LSTM)
QUANTIZED = (("cnn-digits", "int4", "cnn-digits:int4"), ("mlp-wine", "int8", "mlp-wine:int8"),
             ("cnn-digits:onnx", "int8", "cnn-digits:onnx-int8"),
             ("lstm-digits:onnx", "int8", "lstm-digits:onnx-int8"),
             ("mlp-wine:onnx", "int8", "mlp-wine:onnx-int8"))  # fmt: skip
INTEGER_OP = {"cnn-digits": "QLinearConv", "lstm-digits": "DynamicQuantizeLSTM", "mlp-wine": "QGemm"}


@pytest.fixture(scope="module")
def served(home: dict[str, str]) -> Iterator[Server]:
    s = start_server(*MODELS, "cnn-digits:onnx", *(q for _, _, q in QUANTIZED), "--tensor-max-wait-ms", "5", "--max-body-size", "16MiB",
                     "--grpc-port", str(GRPC_PORT), env=home)  # fmt: skip
    yield s
    stop_server(s)


@pytest.fixture(scope="module")
def triton(served: Server) -> th.InferenceServerClient:
    return th.InferenceServerClient(served.url.removeprefix("http://"), concurrency=8, network_timeout=120)


def digits(n: int) -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images[:n, None] / 16.0).astype(
        np.float32
    )  # (n, 1, 8, 8), as `maas train` reads them


def wine(n: int) -> np.ndarray:
    with open(ROOT / "configs/data/wine.csv") as f:
        rows = list(csv.reader(f))[1 : n + 1]
    return np.array([[float(v) for v in r[:-1]] for r in rows], np.float32)  # the raw columns


def inputs_for(model: str) -> np.ndarray:
    return wine(16) if model == "mlp-wine" else digits(16)


def in_process(home: dict[str, str], ref: str, x: np.ndarray) -> np.ndarray:
    module, _ = load_servable(Registry(home=home["MAAS_HOME"]).path_for(ref))
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def infer(
    client: th.InferenceServerClient, model: str, x: np.ndarray, binary: bool, version: str = ""
) -> np.ndarray:
    i = th.InferInput("input", list(x.shape), "FP32")
    i.set_data_from_numpy(x, binary_data=binary)
    out = th.InferRequestedOutput("scores", binary_data=binary)
    r = client.infer(model, [i], outputs=[out], model_version=version, request_id="t-1")
    assert r.get_response()["id"] == "t-1"
    return r.as_numpy("scores")


@pytest.mark.parametrize("model", MODELS)
def test_tritonclient_gets_the_models_own_answers_in_json_and_binary(
    model: str, home: dict[str, str], triton: th.InferenceServerClient
) -> None:
    assert triton.is_server_live() and triton.is_server_ready() and triton.is_model_ready(model)
    meta = triton.get_model_metadata(model)
    assert meta["platform"] == "pytorch_libtorch" and meta["outputs"][0]["name"] == "scores"
    assert meta["inputs"][0]["shape"] == ([-1, 13] if model == "mlp-wine" else [-1, 1, 8, 8])
    assert meta["labels"] == (
        ["class_0", "class_1", "class_2"] if model == "mlp-wine" else list("0123456789")
    )
    config = triton.get_model_config(model)  # Triton's extension: dims without the batch axis
    assert config["max_batch_size"] == 64 and config["input"][0]["data_type"] == "TYPE_FP32"
    assert config["input"][0]["dims"] == meta["inputs"][0]["shape"][1:]
    x = inputs_for(model)
    want = in_process(home, model, x)
    for binary in (False, True):
        np.testing.assert_allclose(infer(triton, model, x, binary), want, atol=1e-5)
    if model == "mlp-wine":  # the served model standardises the raw columns itself
        plain = load_exported(Registry(home=home["MAAS_HOME"]).path_for(model)).eval()
        meta_std = json.loads((Registry(home=home["MAAS_HOME"]).path_for(model) / "config.json").read_text())
        s = meta_std["standardize"]
        with torch.no_grad():
            standardized = plain(
                (torch.from_numpy(x) - torch.tensor(s["mean"])) / torch.tensor(s["std"])
            ).numpy()
            raw = plain(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(want, standardized, atol=1e-5)
        assert not np.allclose(want, raw, atol=1e-2)


def test_onnx_export_matches_torch_and_is_served_by_onnxruntime(
    home: dict[str, str], triton: th.InferenceServerClient
) -> None:
    info = Registry(home=home["MAAS_HOME"]).show("cnn-digits:onnx")
    assert info.parent == "cnn-digits:latest" and info.operation == "export-onnx" and info.family == "onnx"
    assert info.metrics["onnx_max_abs_diff"] < 1e-4
    meta = triton.get_model_metadata("cnn-digits", "onnx")
    assert meta["platform"] == "onnxruntime_onnx" and meta["inputs"][0]["shape"] == [-1, 1, 8, 8]
    assert "onnx" in meta["versions"] and "latest" in meta["versions"]
    x = digits(16)
    want = in_process(home, "cnn-digits", x)
    for binary in (False, True):
        np.testing.assert_allclose(infer(triton, "cnn-digits", x, binary, version="onnx"), want, atol=1e-4)


def test_quantized_versions_serve_what_they_compute_in_process_and_keep_their_accuracy(
    home: dict[str, str], triton: th.InferenceServerClient
) -> None:
    """`maas quantize` on torch models (int4 / int8 codes) and ONNX graphs (ONNX Runtime's int8): smaller
    versions with lineage; tritonclient gets what the version computes in-process; `maas eval` scores each
    on the test split of its training within 2 points of the float parent."""
    from maas.compress.evaluate import onnx_classifier

    reg = Registry(home=home["MAAS_HOME"])
    for parent, method, ref in QUANTIZED:
        info, float_info = reg.show(ref), reg.show(parent)
        assert (info.parent, info.operation, info.parameters["method"]) == (
            f"{parent}:latest" if ":" not in parent else parent, "quantize", method)  # fmt: skip
        if not parent.startswith("mlp-wine"):  # 13 x 32 + 32 x 3 weights: the file is mostly its header
            assert info.size < float_info.size * 0.5, (ref, info.size, float_info.size)
        elif parent == "mlp-wine":  # 13 inputs: no group of 32 fits, one scale per channel instead
            assert info.parameters["per_channel_fallback"] == 1
        name, tag = ref.split(":")
        x = inputs_for(name)
        path = reg.path_for(ref)
        if "onnx" in tag:
            want = onnx_classifier(path)(torch.from_numpy(x)).numpy()
            ops = info.parameters["integer_ops"]
            assert INTEGER_OP[name] in ops, ops  # static for feed-forward graphs, dynamic for the LSTM
        else:
            want = in_process(home, ref, x)
        np.testing.assert_allclose(infer(triton, name, x, True, version=tag), want, atol=1e-5)
        assert not np.allclose(want, in_process(home, name, x), atol=1e-7)  # it is not the float model
        scores = {}
        for v in (ref, parent):
            e = maas("eval", v, "--json", env=home)
            scores[v] = json.loads(e.stdout)["accuracy"]
        assert scores[ref] >= scores[parent] - 0.02, scores
    bad = subprocess.run([sys.executable, "-m", "maas.cli.main", "quantize", "cnn-digits:onnx", "--method", "int4"],
                         capture_output=True, text=True, env=home)  # fmt: skip
    assert bad.returncode == 2 and "int8" in bad.stderr and "Traceback" not in bad.stderr


def test_tritonclient_grpc_gets_the_same_answers(home: dict[str, str], served: Server) -> None:
    import tritonclient.grpc as tg

    c = tg.InferenceServerClient(f"127.0.0.1:{GRPC_PORT}")
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("cnn-digits")
    assert c.get_model_metadata("cnn-digits", "onnx").platform == "onnxruntime_onnx"
    x = digits(16)
    want = in_process(home, "cnn-digits", x)
    for version, tol in (("", 1e-5), ("onnx", 1e-4)):
        i = tg.InferInput("input", list(x.shape), "FP32")
        i.set_data_from_numpy(x)
        r = c.infer("cnn-digits", [i], model_version=version, request_id="g-1")
        assert r.get_response().id == "g-1"
        np.testing.assert_allclose(r.as_numpy("scores"), want, atol=tol)
    bad = tg.InferInput("input", [1, 8, 8], "FP32")
    bad.set_data_from_numpy(x[0])
    with pytest.raises(InferenceServerException, match="'input' has shape"):
        c.infer("cnn-digits", [bad])


def test_a_torch_export_program_imported_by_a_user_is_served(
    home: dict[str, str], served: Server, tmp_path: Path, triton: th.InferenceServerClient
) -> None:
    module, _ = load_servable(Registry(home=home["MAAS_HOME"]).path_for("cnn-digits"))
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(module, (torch.rand(2, 1, 8, 8),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(tmp_path / "cnn.pt2"))
    maas("models", "import", str(tmp_path / "cnn.pt2"), "--name", "cnn-program", env=home)
    meta = triton.get_model_metadata("cnn-program")  # loaded from the registry on first use
    assert meta["inputs"][0]["shape"] == [-1, 1, 8, 8] and meta["outputs"][0]["name"] == "output_0"
    x = digits(5)
    i = th.InferInput(meta["inputs"][0]["name"], list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    out = triton.infer("cnn-program", [i]).as_numpy("output_0")
    np.testing.assert_allclose(out, in_process(home, "cnn-digits", x), atol=1e-5)


def batch_rows(url: str, model: str) -> tuple[float, float]:
    text = httpx.get(url + "/metrics").text
    got = {}
    for k in ("sum", "count"):
        m = re.search(rf'maas:inference_batch_size_{k}{{model="{re.escape(model)}"}} ([0-9.e+]+)', text)
        got[k] = float(m.group(1)) if m else 0.0
    return got["sum"], got["count"]


def test_concurrent_requests_share_forward_passes_and_get_their_own_answers(
    home: dict[str, str], served: Server, triton: th.InferenceServerClient
) -> None:
    x = digits(96)
    alone = np.concatenate([infer(triton, "cnn-digits", x[i : i + 1], True) for i in range(8)])
    rows0, passes0 = batch_rows(served.url, "cnn-digits")

    def one(i: int) -> np.ndarray:
        c = th.InferenceServerClient(served.url.removeprefix("http://"))
        return infer(c, "cnn-digits", x[i : i + 1], True)

    with ThreadPoolExecutor(32) as pool:
        together = np.concatenate(list(pool.map(one, range(96))))
    rows, passes = batch_rows(served.url, "cnn-digits")
    text = httpx.get(served.url + "/metrics").text
    for name in ("inference_request_latency_seconds", "inference_queue_time_seconds"):
        assert re.search(rf'maas:{name}_count{{model="cnn-digits"}} ([1-9][0-9.e+]*)', text), name
    assert rows - rows0 == 96
    assert passes - passes0 < 96  # some forward passes carried several requests
    np.testing.assert_allclose(together[:8], alone, atol=1e-5)
    np.testing.assert_allclose(together, in_process(home, "cnn-digits", x), atol=1e-5)


def post(url: str, body: bytes | dict, headers: dict[str, str] | None = None) -> httpx.Response:
    content = json.dumps(body).encode() if isinstance(body, dict) else body
    return httpx.post(
        url, content=content, headers=headers or {}, timeout=60
    )  # no Content-Type, like tritonclient


def tensor(**kw: object) -> dict[str, object]:
    t = {"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [0.5] * 64} | kw
    return {"inputs": [t]}


def test_bad_input_is_a_4xx_naming_the_input_and_the_server_stays_healthy(served: Server) -> None:
    u = served.url + "/v2/models/cnn-digits/infer"
    cases = [
        (tensor(shape=[1, 1, 8, 7], data=[0.5] * 56), 400, "'input' has shape [1, 1, 8, 7]"),
        (tensor(datatype="FP64"), 400, "'input' has datatype FP64; this model takes FP32"),
        (tensor(data=[0.5] * 63), 400, "'input' has 63 values; shape [1, 1, 8, 8] needs 64"),
        (tensor(name="image"), 400, "unknown input 'image'"),
        (tensor(datatype="BYTES", data=["x"] * 64), 400, "'input' has datatype BYTES"),
        (tensor() | {"outputs": [{"name": "probs"}]}, 400, "unknown output 'probs'"),
        (b"{not json", 400, "not valid JSON"),
    ]
    for body, status, msg in cases:
        r = post(u, body)
        assert r.status_code == status and msg in r.json()["error"], (r.status_code, r.text)
    head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8],
                                   "parameters": {"binary_data_size": 256}}]}).encode()  # fmt: skip
    nan = np.full((1, 1, 8, 8), 0.5, np.float32)
    nan[0, 0, 4, 4] = np.nan
    r = post(u, head + nan.tobytes(), {"Inference-Header-Content-Length": str(len(head))})
    assert r.status_code == 400 and "'input' holds NaN" in r.json()["error"]
    big = np.zeros((400_000, 1, 8, 8), np.float32).tobytes()  # ~100 MB
    r = post(u, head + big, {"Inference-Header-Content-Length": str(len(head))})
    assert r.status_code == 413 and "over the limit" in r.json()["error"]
    assert post(served.url + "/v2/models/nope/infer", tensor()).status_code == 404
    r = post(served.url + "/v2/models/cnn-digits/versions/v9/infer", tensor())
    assert r.status_code == 404 and "error" in r.json()
    from openai import BadRequestError, OpenAI

    with pytest.raises(BadRequestError, match="tensor model"):
        OpenAI(base_url=served.base_url, api_key="x", max_retries=0).chat.completions.create(
            model="cnn-digits", messages=[{"role": "user", "content": "hi"}]
        )
    assert httpx.get(served.url + "/v2/health/ready").status_code == 200
    ok = post(u, tensor())
    assert ok.status_code == 200 and ok.json()["outputs"][0]["shape"] == [1, 10]


def test_an_llm_asked_for_v2_inference_is_a_400(server: Server) -> None:
    r = post(server.url + "/v2/models/smollm2-135m-instruct/infer", tensor())
    assert r.status_code == 400 and "not a tensor model" in r.json()["error"]


def test_maas_predict_and_models_show(home: dict[str, str], tmp_path: Path) -> None:
    x = digits(4)
    np.save(tmp_path / "x.npy", x)
    r = maas("predict", "cnn-digits:onnx", "--input", str(tmp_path / "x.npy"), "--json", env=home)
    np.testing.assert_allclose(
        np.array(json.loads(r.stdout)["scores"]), in_process(home, "cnn-digits", x), atol=1e-4
    )
    (tmp_path / "w.json").write_text(json.dumps({"input": wine(3).tolist()}))
    r = maas("predict", "mlp-wine", "--input", str(tmp_path / "w.json"), env=home)
    want = in_process(home, "mlp-wine", wine(3)).argmax(-1)
    assert [line.split("\t")[1] for line in r.stdout.splitlines()] == [f"class_{k}" for k in want]
    bad = subprocess.run([sys.executable, "-m", "maas.cli.main", "predict", "cnn-digits", "--input",
                          str(tmp_path / "w.json")], capture_output=True, text=True, env=home)  # fmt: skip
    assert bad.returncode == 2 and "'input' has shape [3, 13]" in bad.stderr and "Traceback" not in bad.stderr
    show = json.loads(maas("models", "show", "lstm-digits", env=home).stdout)
    assert show["signature"]["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}
