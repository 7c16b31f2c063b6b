"""Prometheus metrics, named like vLLM's with a `maas:` prefix and a `model` label.

Per-request figures are observed by a RequestTimer the serving code drives; gauges (running,
waiting, KV-cache use) are read from the loaded engines at scrape time; HTTP requests are
counted by a middleware.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from maas.models.families import Kind

disable_created_metrics()  # no *_created series: they double the output and nobody graphs them

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
_ITL = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """All of the server's metrics in one registry (one per app, so tests can build several)."""

    def __init__(self, engines: Callable[[], list[tuple[str, str, Any]]]):
        self.registry = CollectorRegistry()
        r = self.registry
        self.ttft = Histogram("maas:time_to_first_token_seconds", "Time to first token.", ["model"],
                              buckets=_LATENCY, registry=r)  # fmt: skip
        self.itl = Histogram("maas:inter_token_latency_seconds", "Time between output tokens.", ["model"],
                             buckets=_ITL, registry=r)  # fmt: skip
        self.e2e = Histogram("maas:e2e_request_latency_seconds", "Request latency, arrival to last token.",
                             ["model"], buckets=_LATENCY, registry=r)  # fmt: skip
        self.queue = Histogram("maas:request_queue_time_seconds", "Time waiting before first scheduled.",
                               ["model"], buckets=_LATENCY, registry=r)  # fmt: skip
        self.prompt_tokens = Counter("maas:prompt_tokens", "Prompt tokens processed.", ["model"], registry=r)
        self.generation_tokens = Counter("maas:generation_tokens", "Tokens generated.", ["model"], registry=r)
        self.finished = Counter("maas:request_success", "Finished requests by finish reason.",
                                ["model", "finished_reason"], registry=r)  # fmt: skip
        self.rejected = Counter("maas:requests_rejected", "Requests refused before running, by reason.",
                                ["model", "reason"], registry=r)  # fmt: skip
        self.http = Counter("maas:http_requests", "HTTP requests by route and status.", ["route", "method", "status"],
                            registry=r)  # fmt: skip
        self.embed_batch = Histogram("maas:embedding_batch_size", "Sentences per embedding forward pass.",
                                     ["model"], buckets=_BATCH, registry=r)  # fmt: skip
        self.engine_restarts = Counter("maas:engine_restarts", "Models loaded again after their engine died.",
                                       ["model"], registry=r)  # fmt: skip
        self.embed_inputs = Counter("maas:embedding_inputs", "Sentences embedded.", ["model"], registry=r)
        self.infer_latency = Histogram("maas:inference_request_latency_seconds",
                                       "Tensor-model (v2) request latency, body read to response built.",
                                       ["model"], buckets=_LATENCY, registry=r)  # fmt: skip
        self.infer_batch = Histogram("maas:inference_batch_size", "Rows per tensor-model forward pass.",
                                     ["model"], buckets=_BATCH, registry=r)  # fmt: skip
        self.infer_queue = Histogram("maas:inference_queue_time_seconds",
                                     "Time a tensor-model request waited for its forward pass.",
                                     ["model"], buckets=_LATENCY, registry=r)  # fmt: skip
        r.register(_EngineGauges(engines))

    def render(self) -> bytes:
        """The text exposition format."""
        return bytes(generate_latest(self.registry))

    def batch_hook(self, model: str, kind: Kind) -> Callable[[int, list[float]], None] | None:
        """What a batching engine calls after each forward pass: batch size (and queue times)."""
        if kind == "embedding":
            observe = self.embed_batch.labels(model).observe
            return lambda rows, _waits: observe(rows)
        if kind == "tensor":
            size, queue = self.infer_batch.labels(model), self.infer_queue.labels(model)

            def hook(rows: int, waits: list[float]) -> None:
                size.observe(rows)
                for w in waits:
                    queue.observe(w)

            return hook
        return None

    def timer(self, model: str) -> RequestTimer:
        """A timer for one generation request."""
        return RequestTimer(self, model)


class RequestTimer:
    """Observes one request: TTFT, inter-token gaps, queue time, tokens, finish reason."""

    def __init__(self, m: Metrics, model: str):
        self.m, self.model = m, model
        self.start = time.monotonic()
        self.last: float | None = None
        self.queue_seen = False
        self.prompt_tokens = 0

    def output(self, n_new_tokens: int, queue_time: float | None) -> None:
        """An output arrived carrying `n_new_tokens` tokens."""
        now = time.monotonic()
        if queue_time is not None and not self.queue_seen:
            self.queue_seen = True
            self.m.queue.labels(self.model).observe(max(0.0, queue_time))
        if n_new_tokens <= 0:
            return
        if self.last is None:
            self.m.ttft.labels(self.model).observe(now - self.start)
            n_new_tokens -= 1
        elif n_new_tokens > 0:
            gap = (now - self.last) / n_new_tokens
            for _ in range(n_new_tokens):
                self.m.itl.labels(self.model).observe(gap)
        self.last = now

    def finish(self, prompt_tokens: int, completion_tokens: int, reason: str | None) -> None:
        """The request ended (reason None: aborted / failed)."""
        self.m.e2e.labels(self.model).observe(time.monotonic() - self.start)
        self.m.prompt_tokens.labels(self.model).inc(prompt_tokens)
        self.m.generation_tokens.labels(self.model).inc(completion_tokens)
        self.m.finished.labels(self.model, reason or "abort").inc()


class _EngineGauges(Collector):
    """Running / waiting requests and KV-cache use, read from the loaded engines at scrape time."""

    def __init__(self, engines: Callable[[], list[tuple[str, str, Any]]]):
        self.engines = engines

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        running = GaugeMetricFamily(
            "maas:num_requests_running", "Requests in the running batch.", labels=["model"]
        )
        waiting = GaugeMetricFamily("maas:num_requests_waiting", "Requests waiting to run.", labels=["model"])
        kv = GaugeMetricFamily("maas:kv_cache_usage_perc", "KV-cache blocks in use (0-1).", labels=["model"])
        loaded = GaugeMetricFamily("maas:model_loaded", "1 for each loaded model.", labels=["model", "kind"])
        queries = CounterMetricFamily(
            "maas:prefix_cache_queries", "Prompt tokens looked up in the prefix cache.", labels=["model"]
        )
        hits = CounterMetricFamily(
            "maas:prefix_cache_hits",
            "Prompt tokens found in the prefix cache (not recomputed).",
            labels=["model"],
        )
        for name, kind, engine in self.engines():
            stats = engine.stats()
            loaded.add_metric([name, kind], 1)
            if kind == "llm":
                running.add_metric([name], stats["running"])
                waiting.add_metric([name], stats["waiting"])
                kv.add_metric([name], stats["kv_cache_usage"])
                queries.add_metric([name], stats.get("prefix_cache_queries", 0))
                hits.add_metric([name], stats.get("prefix_cache_hits", 0))
            else:
                waiting.add_metric([name], stats.get("queued", 0))
        yield from (running, waiting, kv, loaded, queries, hits)
