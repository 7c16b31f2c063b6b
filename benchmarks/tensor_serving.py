"""Tensor-model serving benchmark: maas's Open Inference Protocol v2 server next to KServe's own
Python ModelServer and ONNX Runtime in-process, on the same ONNX model, in one run.

    .venv/bin/python benchmarks/tensor_serving.py                  # a few minutes
    .venv/bin/python benchmarks/tensor_serving.py --quick          # smoke run (seconds per phase)
    .venv/bin/python benchmarks/tensor_serving.py --skip-kserve --requests 2000 --home /tmp/bench-home

Part 1, cnn-digits exported to ONNX (`maas export onnx` when the command exists, else
torch.onnx here, imported as cnn-digits:onnx), one 8x8 image per request, binary tensors sent by
tritonclient.http from threads (one client per thread, so N threads = N requests in
flight): maas (ONNX Runtime backend) and KServe (benchmarks/kserve_ort_model.py in its own venv,
.bench-venvs/kserve, created when missing) at 1, 8 and 64 in flight; ONNX Runtime in-process one
image per call and 64 per call (the ceiling). maas's batch-size histogram is scraped from /metrics
around its 64-in-flight run. Part 2, a model where compute dominates (an LSTM with 1024 hidden
units, PyTorch backend): maas one by one next to 64 in flight.

Requests/s, p50 and p99 latency. Servers run one at a time on free loopback ports with the same
thread count; the clients share the machine's cores with them. Compare within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata as md
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from v2_load import (
    BATCH_METRIC,
    CpuClock,
    Histogram,
    Result,
    Target,
    batch_histogram,
    check_answer,
    histogram_lines,
    summarize,
    v2_load,
)

ROOT = Path(__file__).resolve().parent.parent
MAAS = str(Path(sys.executable).parent / "maas")
KSERVE_VENV = ROOT / ".bench-venvs" / "kserve"
KSERVE_SCRIPT = ROOT / "benchmarks" / "kserve_ort_model.py"


class Recipe(NamedTuple):
    """A model `maas train` makes for the benchmark: registry name, config file, --set overrides."""

    name: str
    config: Path
    sets: tuple[str, ...] = ()


CNN = Recipe("cnn-digits", ROOT / "configs" / "cnn-digits.yaml")
LSTM = Recipe("lstm-digits-1024", ROOT / "configs" / "lstm-digits.yaml", ("model.params.hidden_size=1024",))
IN_FLIGHT = (1, 8, 64)


# -- models --------------------------------------------------------------------------------------


def maas_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the `maas` command (MAAS_HOME from the environment); exit with its stderr on failure."""
    r = subprocess.run([MAAS, *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"maas {' '.join(args)} failed:\n{r.stderr[-2000:]}")
    return r


def registered(ref: str) -> bool:
    """True when the registry holds name:tag."""
    return maas_cli("models", "show", ref, check=False).returncode == 0


def train(recipe: Recipe, steps: int) -> None:
    """`maas train` the model with few steps (accuracy does not matter here), unless registered."""
    if registered(recipe.name):
        return
    print(f"training {recipe.name} ({steps} steps)", file=sys.stderr)
    out = Path(os.environ["MAAS_HOME"]) / "runs" / recipe.name
    overrides = [f"name={recipe.name}", f"train.steps={steps}", f"output.dir={out}", *recipe.sets]
    maas_cli("train", str(recipe.config), *[a for s in overrides for a in ("--set", s)])


def has_maas_export() -> bool:
    """True once `maas export` exists (`maas export onnx NAME --tag onnx`)."""
    return maas_cli("export", "--help", check=False).returncode == 0


def export_onnx(name: str) -> None:
    """Register NAME:onnx: with `maas export onnx` when it exists, else with torch.onnx here."""
    if registered(f"{name}:onnx"):
        return
    if has_maas_export():
        print(f"maas export onnx {name} --tag onnx", file=sys.stderr)
        maas_cli("export", "onnx", name, "--tag", "onnx")
    else:
        print(
            f"`maas export` is missing: torch.onnx.export + maas models import {name}:onnx", file=sys.stderr
        )
        maas_cli("models", "import", str(torch_onnx_export(name)), "--name", f"{name}:onnx")


def torch_onnx_export(name: str) -> Path:
    """model.onnx of a registered `maas train` model, with a dynamic batch axis."""
    import torch

    from maas.models.exported import load_servable
    from maas.store.locate import resolve

    module, sig = load_servable(resolve(name)[1])
    x = torch.zeros(2, *(abs(d) for d in sig.inputs[0].shape[1:]))  # (B, 1, 8, 8)
    batch = torch.export.Dim("batch", min=1, max=4096)
    prog = torch.onnx.export(
        module,
        (x,),
        dynamo=True,
        verbose=False,
        input_names=[t.name for t in sig.inputs],
        output_names=[t.name for t in sig.outputs],
        dynamic_shapes=({0: batch},),
    )
    assert prog is not None  # dynamo=True always returns a program
    path = Path(os.environ["MAAS_HOME"]) / "onnx" / name / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    prog.save(str(path))
    return path


def onnx_path(ref: str) -> Path:
    """The .onnx file a registry reference stores."""
    from maas.formats.onnx import onnx_file
    from maas.store.locate import resolve

    return onnx_file(resolve(ref)[1])


def digit_images(n: int = 64) -> np.ndarray:
    """n real 8x8 digit images scaled as in training: (n, 1, 1, 8, 8) FP32, one request each."""
    from sklearn.datasets import load_digits

    x = load_digits().images[:n].astype(np.float32) / 16.0
    return x.reshape(n, 1, 1, 8, 8)


# -- servers -------------------------------------------------------------------------------------


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 180) -> None:
    """Poll /v2/health/ready until 200; exit with the log's tail if the server dies or stalls."""
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; log {log}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise SystemExit(f"server on port {port} not ready after {timeout:.0f} s; log {log}")


@contextlib.contextmanager
def server(cmd: list[str], port: int, log: Path) -> Iterator[int]:
    """A server subprocess (its pid), ready on `port` inside the block and always stopped after it."""
    print(f"  $ {' '.join(cmd)}  (log {log})", file=sys.stderr)
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_ready(proc, port, log)
            yield proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def maas_server(ref: str, port: int, args: argparse.Namespace, backend: str) -> list[str]:
    """`maas serve REF` on `port` with --threads and the tensor backend, logging warnings only."""
    cmd = [
        MAAS,
        "--log-level",
        "warning",
        "serve",
        ref,
        "--port",
        str(port),
        "--threads",
        str(args.threads),
        "--no-registry",
    ]
    cmd += ["--tensor-backend", backend]
    if args.max_wait_ms is not None:
        cmd += ["--tensor-max-wait-ms", str(args.max_wait_ms)]
    return cmd


def kserve_python() -> Path:
    """KServe's venv python, creating the venv (python3 -m venv + pip install) when missing."""
    py = KSERVE_VENV / "bin" / "python"
    if not py.exists():
        print(f"creating {KSERVE_VENV}: python3 -m venv, pip install kserve onnxruntime", file=sys.stderr)
        subprocess.run(["python3", "-m", "venv", str(KSERVE_VENV)], check=True)
        subprocess.run(
            [str(KSERVE_VENV / "bin" / "pip"), "install", "-q", "kserve", "onnxruntime"], check=True
        )
    return py


def kserve_server(onnx: Path, name: str, port: int, threads: int) -> list[str]:
    """KServe's ModelServer serving `onnx` (REST only; logging left unconfigured: warnings only)."""
    return [str(kserve_python()), str(KSERVE_SCRIPT), "--onnx", str(onnx), "--model_name", name,
            "--http_port", str(port), "--threads", str(threads), "--enable_grpc", "false",
            "--enable_latency_logging", "false", "--configure_logging", "false"]  # fmt: skip


def ort_session(path: Path, threads: int):  # type: ignore[no-untyped-def]
    """An ONNX Runtime CPU session pinned like the servers' (intra-op threads, one inter-op)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_inprocess(session, images: np.ndarray, n: int, batch: int, label: str) -> Result:  # type: ignore[no-untyped-def]
    """n images through session.run, `batch` per call: images/s and per-call latency."""
    x = np.concatenate([images[i % len(images)] for i in range(batch)])  # (batch, 1, 8, 8)
    calls = max(1, n // batch)
    for _ in range(10):
        session.run(None, {"input": x})
    lat, clock = [], CpuClock(None)
    clock.start()
    t0 = time.perf_counter()
    for _ in range(calls):
        t = time.perf_counter()
        session.run(None, {"input": x})
        lat.append(time.perf_counter() - t)
    seconds = time.perf_counter() - t0
    return summarize(label, lat, seconds, calls * batch, clock.stop(), has_server=False)


# -- phases --------------------------------------------------------------------------------------


def progress(r: Result) -> None:
    """One line on stderr as each configuration finishes."""
    print(f"  {r.label}: {r.rate:.0f} req/s, p50 {r.p50_ms:.2f} ms", file=sys.stderr)


def run_maas(ref: str, images: np.ndarray, args: argparse.Namespace, backend: str, in_flight: tuple[int, ...],
             expected: np.ndarray | None = None) -> tuple[list[Result], list[str]]:  # fmt: skip
    """maas serving `ref` at each in-flight count; its batch sizes during the last count's run."""
    name, _, tag = ref.partition(":")
    target = Target(free_port(), name, tag)
    results: list[Result] = []
    before: list[Histogram] = []
    with server(
        maas_server(ref, target.port, args, backend), target.port, args.logs / f"maas-{name}.log"
    ) as pid:
        if expected is not None:
            diff = check_answer(target, images[0], expected)
            print(f"  maas's scores are within {diff:.1e} of in-process ORT's", file=sys.stderr)
        for c in in_flight:
            scrape = lambda: before.append(batch_histogram(target.port, ref))  # noqa: E731
            results.append(v2_load(target, images, args.requests, c, f"maas, {c} in flight", pid, scrape))
            progress(results[-1])
        hist = histogram_lines(batch_histogram(target.port, ref).minus(before[-1]))
    return results, hist


def run_kserve(
    onnx: Path, images: np.ndarray, args: argparse.Namespace, expected: np.ndarray
) -> list[Result]:
    """KServe's ModelServer serving the same model.onnx at each in-flight count."""
    target = Target(free_port(), CNN.name)  # KServe refuses versions in the URL
    results = []
    with server(kserve_server(onnx, target.model, target.port, args.threads), target.port,
                args.logs / "kserve.log") as pid:  # fmt: skip
        diff = check_answer(target, images[0], expected)
        print(f"  KServe's scores are within {diff:.1e} of in-process ORT's", file=sys.stderr)
        for c in IN_FLIGHT:
            results.append(v2_load(target, images, args.requests, c, f"KServe, {c} in flight", pid))
            progress(results[-1])
    return results


# -- report --------------------------------------------------------------------------------------


def version(dist: str) -> str:
    """An installed distribution's version, or '-'."""
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "-"


def kserve_versions() -> str:
    """kserve and onnxruntime versions inside KServe's venv."""
    code = "import importlib.metadata as m; print(m.version('kserve'), m.version('onnxruntime'))"
    out = subprocess.run([str(kserve_python()), "-c", code], capture_output=True, text=True).stdout.split()
    return f"kserve {out[0]} + onnxruntime {out[1]} (own venv)" if len(out) == 2 else "kserve ?"


def header(args: argparse.Namespace) -> list[str]:
    """The machine, the versions and the thread counts."""
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())  # fmt: skip
    kserve = "KServe skipped" if args.skip_kserve else kserve_versions()
    return [
        f"machine: nproc {len(os.sched_getaffinity(0))}, {cpu}; Python {platform.python_version()}",
        f"maas {version('maas')}, torch {version('torch')}, onnxruntime {version('onnxruntime')}, "
        f"tritonclient {version('tritonclient')}; {kserve}",
        f"threads: maas --threads {args.threads} (torch and ORT intra-op)"
        + ("" if args.skip_kserve else f"; KServe model ORT intra_op {args.threads}")
        + f"; in-process ORT intra_op {args.threads}. The load generator's threads share the same cores.",
        "logging: warnings only on every server (no per-request access or timing lines)",
        f"maas batching: --tensor-max-wait-ms {args.max_wait_ms if args.max_wait_ms is not None else '(default)'}",
    ]


def table(results: list[Result]) -> list[str]:
    """A markdown table of the results."""
    lines = ["| configuration | requests/s | p50 ms | p99 ms | server CPU ms/req | client CPU ms/req |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in results:
        server = "-" if r.server_cpu_ms is None else f"{r.server_cpu_ms:.2f}"
        lines.append(
            f"| {r.label} | {r.rate:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {server} | {r.client_cpu_ms:.3f} |"
        )
    return lines


def ratio(a: Result | None, b: Result | None) -> str:
    """a's rate over b's, as '1.23x', or '-'."""
    return f"{a.rate / b.rate:.2f}x" if a and b and b.rate else "-"


# -- main ----------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--requests", type=int, default=5000, help="requests per configuration (default %(default)s)"
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: 200 requests, 20 training steps")
    ap.add_argument("--skip-kserve", action="store_true", help="leave KServe out")
    ap.add_argument(
        "--home", help="MAAS_HOME to use and keep (default: a temporary one); models there are reused"
    )
    ap.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)), help="threads per server (default nproc)"
    )
    ap.add_argument("--max-wait-ms", type=float, help="maas --tensor-max-wait-ms (default: maas's default)")
    args = ap.parse_args()
    if args.quick:
        args.requests = min(args.requests, 200)
    args.steps = 20 if args.quick else 60
    return args


@dataclass
class Figures:
    """Everything one run measured."""

    ort: list[Result]  # in-process ONNX Runtime, 1 and 64 images per call
    maas: list[Result]  # cnn-digits:onnx at each of IN_FLIGHT
    kserve: list[Result]  # the same through KServe (empty with --skip-kserve)
    lstm: list[Result]  # the LSTM one by one and at the largest in-flight count
    hist: list[str]  # maas's batch sizes during the CNN's largest in-flight run
    lstm_hist: list[str]  # and during the LSTM's


def measure(args: argparse.Namespace, onnx: Path) -> Figures:
    """Every phase, one server at a time."""
    images = digit_images()
    session = ort_session(onnx, args.threads)
    expected = session.run(None, {"input": images[0]})[0]
    print("ONNX Runtime in-process", file=sys.stderr)
    ort = [ort_inprocess(session, images, args.requests, 1, "ORT in-process, 1 image per call"),
           ort_inprocess(session, images, args.requests * 4, 64, "ORT in-process, 64 images per call (images/s)")]  # fmt: skip
    print(f"maas, {CNN.name}:onnx (ONNX Runtime)", file=sys.stderr)
    maas, hist = run_maas(f"{CNN.name}:onnx", images, args, "onnxruntime", IN_FLIGHT, expected)
    kserve: list[Result] = []
    if not args.skip_kserve:
        print(f"KServe, {CNN.name} (ONNX Runtime)", file=sys.stderr)
        kserve = run_kserve(onnx, images, args, expected)
    print(f"maas, {LSTM.name} (PyTorch)", file=sys.stderr)
    lstm, lstm_hist = run_maas(LSTM.name, images, args, "torch", (1, IN_FLIGHT[-1]))
    return Figures(ort, maas, kserve, lstm, hist, lstm_hist)


def report(args: argparse.Namespace, onnx: Path, f: Figures) -> None:
    """The header, both parts' tables and histograms, and the summary line."""
    maas, kserve, lstm, top = f.maas, f.kserve, f.lstm, IN_FLIGHT[-1]
    print("\n".join(["", *header(args), ""]))
    print(f"Part 1: {CNN.name}:onnx ({onnx.stat().st_size / 1024:.0f} KiB), one 8x8 image per request, binary "
          f"tensors, {args.requests} requests per configuration\n")  # fmt: skip
    print("\n".join(table([*maas, *kserve, *f.ort])))
    print(f"\nmaas batch sizes during its {top}-in-flight run ({BATCH_METRIC}):")
    print("\n".join(f.hist))
    if kserve:
        pairs = zip(IN_FLIGHT, maas, kserve, strict=True)
        print("\nmaas / KServe: " + ", ".join(f"{c} in flight {ratio(a, b)}" for c, a, b in pairs))
    print(f"\nPart 2: {LSTM.name} (LSTM, 1024 hidden units, PyTorch backend), where compute dominates\n")
    print("\n".join(table(lstm)))
    print(f"\nbatching's gain: {ratio(lstm[-1], lstm[0])} ({top} in flight over one by one); batch sizes:")
    print("\n".join(f.lstm_hist))
    if kserve:
        goal = "met" if maas[-1].rate >= 1.5 * kserve[-1].rate else "NOT met"
        print(f"\nSummary: maas {maas[-1].rate:.0f} req/s vs KServe {kserve[-1].rate:.0f} req/s at {top} in "
              f"flight: {ratio(maas[-1], kserve[-1])} (goal >= 1.5x: {goal})")  # fmt: skip


def main() -> None:
    """Pick MAAS_HOME (before anything of maas is imported), then benchmark."""
    args = parse_args()
    with contextlib.ExitStack() as stack:
        home = args.home or stack.enter_context(tempfile.TemporaryDirectory(prefix="maas-bench-tensor-"))
        os.environ["MAAS_HOME"] = str(Path(home).resolve())
        os.environ["MAAS_AUTO_IMPORT_BUILTINS"] = "0"
        args.logs = Path(home) / "bench-logs"
        args.logs.mkdir(parents=True, exist_ok=True)
        print(f"MAAS_HOME={os.environ['MAAS_HOME']}", file=sys.stderr)
        for model in (CNN, LSTM):
            train(model, args.steps)
        export_onnx(CNN.name)
        onnx = onnx_path(f"{CNN.name}:onnx")
        report(args, onnx, measure(args, onnx))


if __name__ == "__main__":
    main()
