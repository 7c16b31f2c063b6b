"""Load for Open Inference Protocol v2 servers, used by benchmarks/tensor_serving.py: one-image
requests with binary tensors from tritonclient.http threads (one client per thread, so N threads
keep N requests in flight), per-request latency, CPU time of the server and of the clients, and
maas's batch-size histogram scraped from /metrics.

    r = v2_load(Target(8000, "cnn-digits", "onnx"), images, n=2000, in_flight=64, label="maas", pid=pid)
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import psutil

BATCH_METRIC = "maas:inference_batch_size"


@dataclass
class Result:
    """One configuration's throughput, latency and CPU cost."""

    label: str
    rate: float  # requests/s (images/s for in-process batches)
    p50_ms: float
    p99_ms: float
    server_cpu_ms: float | None  # server CPU time per request (user + system, all its threads)
    client_cpu_ms: float  # this process's CPU time per request (the load generator or in-process ORT)


@dataclass(frozen=True)
class Target:
    """Where a v2 model answers: port, model name and version ("" = none in the URL)."""

    port: int
    model: str
    version: str = ""


class CpuClock:
    """CPU seconds spent by this process and by a server process tree between start and stop."""

    def __init__(self, server_pid: int | None):
        self.server = psutil.Process(server_pid) if server_pid else None
        self.t0 = (0.0, 0.0)

    def _now(self) -> tuple[float, float]:
        server = 0.0
        if self.server is not None:
            for p in (self.server, *self.server.children(recursive=True)):
                c = p.cpu_times()
                server += c.user + c.system
        return time.process_time(), server

    def start(self) -> None:
        """Take the starting readings."""
        self.t0 = self._now()

    def stop(self) -> tuple[float, float]:
        """(client seconds, server seconds) since start."""
        c, s = self._now()
        return c - self.t0[0], s - self.t0[1]


def summarize(label: str, latencies: list[float], seconds: float, items: int, cpu: tuple[float, float],
              has_server: bool = True) -> Result:  # fmt: skip
    """items/s over the wall time, p50 and p99 of the per-call latencies, CPU ms per item."""
    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
    server = cpu[1] / items * 1000 if has_server else None
    return Result(label, items / seconds, float(p50), float(p99), server, cpu[0] / items * 1000)


def v2_request(image: np.ndarray, name: str = "input") -> tuple[list[object], list[object]]:
    """tritonclient.http inputs and requested outputs for one image, binary both ways."""
    import tritonclient.http as th

    x = th.InferInput(name, list(image.shape), "FP32")
    x.set_data_from_numpy(image, binary_data=True)
    return [x], [th.InferRequestedOutput("scores", binary_data=True)]


def v2_load(target: Target, images: np.ndarray, n: int, in_flight: int, label: str, pid: int,
            on_start: Callable[[], None] | None = None) -> Result:  # fmt: skip
    """n one-image requests from `in_flight` threads; `on_start` runs once all have warmed up."""
    import tritonclient.http as th

    per = max(1, n // in_flight)
    lat: list[list[float]] = [[] for _ in range(in_flight)]
    errors: list[Exception] = []
    clock = CpuClock(pid)

    def started() -> None:
        if on_start is not None:
            on_start()
        clock.start()

    go = threading.Barrier(in_flight + 1, action=started)  # the action runs before anyone is released

    def worker(k: int) -> None:
        client = th.InferenceServerClient(f"127.0.0.1:{target.port}", concurrency=1, network_timeout=300)
        reqs = [v2_request(images[(k + j) % len(images)]) for j in range(8)]
        try:
            for inputs, outputs in reqs[:3]:  # warm-up
                client.infer(target.model, inputs, model_version=target.version, outputs=outputs)
        except Exception as e:
            errors.append(e)
        go.wait()
        try:
            for j in range(0 if errors else per):
                inputs, outputs = reqs[j % len(reqs)]
                t = time.perf_counter()
                client.infer(target.model, inputs, model_version=target.version, outputs=outputs)
                lat[k].append(time.perf_counter() - t)
        except Exception as e:
            errors.append(e)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(in_flight)]
    for t in threads:
        t.start()
    go.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    seconds, cpu = time.perf_counter() - t0, clock.stop()
    if errors:
        raise SystemExit(f"{label}: {errors[0]!r}")
    return summarize(label, [x for xs in lat for x in xs], seconds, per * in_flight, cpu)


def check_answer(target: Target, image: np.ndarray, expected: np.ndarray) -> float:
    """Largest |difference| between the server's scores for one image and the expected ones."""
    import tritonclient.http as th

    client = th.InferenceServerClient(f"127.0.0.1:{target.port}")
    inputs, outputs = v2_request(image)
    got = client.infer(target.model, inputs, model_version=target.version, outputs=outputs).as_numpy("scores")
    client.close()
    return float(np.abs(got - expected).max())


# -- maas's batch-size histogram -----------------------------------------------------------------


@dataclass
class Histogram:
    """A Prometheus histogram's state: cumulative counts per upper bound, count and sum."""

    buckets: dict[float, float]
    count: float = 0.0
    total: float = 0.0

    def minus(self, earlier: Histogram) -> Histogram:
        """What was observed between `earlier` and this scrape."""
        b = {le: n - earlier.buckets.get(le, 0.0) for le, n in self.buckets.items()}
        return Histogram(b, self.count - earlier.count, self.total - earlier.total)


def batch_histogram(port: int, model: str) -> Histogram:
    """maas:inference_batch_size for `model`, scraped from /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    h = Histogram({})
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if family.name != BATCH_METRIC or s.labels.get("model") != model:
                continue
            if s.name.endswith("_bucket"):
                h.buckets[float(s.labels["le"])] = s.value
            elif s.name.endswith("_count"):
                h.count = s.value
            elif s.name.endswith("_sum"):
                h.total = s.value
    return h


def histogram_lines(h: Histogram) -> list[str]:
    """Forward passes per range of rows, and the mean rows per pass."""
    if h.count <= 0:
        return ["  (no forward passes recorded)"]
    lines = [f"  {h.count:.0f} forward passes for {h.total:.0f} rows: {h.total / h.count:.1f} rows per pass"]
    low, below = 1, 0.0
    for le in sorted(h.buckets):
        passes, below = h.buckets[le] - below, h.buckets[le]
        if passes > 0:
            span = f"{low}-{le:.0f}" if le > low else f"{low}"
            lines.append(f"  {span:>7} rows: {passes:6.0f} passes ({passes / h.count:6.1%})")
        low = int(le) + 1 if math.isfinite(le) else low
    return lines
