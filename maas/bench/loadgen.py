"""Drive an OpenAI-compatible server with streaming completions and time every request.

Closed loop (`concurrency` clients, each sending its next request when the last one ends) or open
loop (Poisson arrivals at `request_rate`, optionally capped at `concurrency` in flight).
Prompts are text (from a file) or synthetic token-id prompts of an exact length, which every
server that takes token ids in `prompt` accepts (maas, vLLM, llama.cpp's server).

A request whose connection fails tries again after a backoff (exponential, capped) and counts once,
whatever its tries; when no connection has worked for `LoadSpec.unreachable_s`, the run ends early and
its summary says "server unreachable at URL".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

BACKOFF_S = 0.05  # the first wait after a failed connection; doubled on each failure after it
MAX_BACKOFF_S = 1.0


@dataclass
class Record:
    """One request's timings (seconds from the run's start) and outcome."""

    start: float
    ttft: float | None = None
    end: float | None = None
    output_tokens: int = 0
    prompt_tokens: int = 0
    token_times: list[float] = field(default_factory=list)  # arrival time of each output chunk
    error: str | None = None  # None: ok; else "http_429", "http_503", "timeout", "connect", ...
    retry_after: float | None = None  # seconds the server asked to wait (429/503 Retry-After)
    connect_retries: int = 0  # connections that failed before this request's last try

    @property
    def ok(self) -> bool:
        """True when it completed."""
        return self.error is None and self.end is not None


@dataclass(frozen=True)
class LoadSpec:
    """What to send and how hard."""

    url: str  # base URL, e.g. http://127.0.0.1:8000/v1
    model: str
    prompts: list[str | list[int]]
    output_len: int
    concurrency: int | None = None
    request_rate: float | None = None  # requests/s, Poisson
    num_prompts: int | None = None
    duration: float | None = None  # seconds
    api_key: str | None = None
    timeout: float = 600.0
    seed: int = 0
    unreachable_s: float = 5.0  # end the run when no connection has worked for this long


@dataclass
class Reach:
    """Whether the server can be reached; shared by every request of a run."""

    url: str
    give_up_s: float
    down_since: float | None = None  # the first failed connection since the last one that worked
    unreachable: str | None = None  # set when the run gives up: the words of its report

    def ok(self) -> None:
        """A connection worked."""
        self.down_since = None

    def failed(self) -> bool:
        """A connection failed: True to try again (after a backoff), False once the server is unreachable."""
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
        if self.unreachable is None and now - self.down_since >= self.give_up_s:
            self.unreachable = (
                f"server unreachable at {self.url}: no connection for {now - self.down_since:.1f} s"
            )
        return self.unreachable is None


def synthetic_prompts(
    n: int, input_len: int, seed: int = 0, low: int = 1000, high: int = 20000
) -> list[list[int]]:
    """`n` prompts of exactly `input_len` random token ids."""
    rnd = random.Random(seed)
    return [[rnd.randrange(low, high) for _ in range(input_len)] for _ in range(n)]


def read_prompts(path: str) -> list[str | list[int]]:
    """Prompts from a file: JSONL with a "prompt" field, or one prompt per line."""
    out: list[str | list[int]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            if line.startswith("{"):
                try:
                    out.append(json.loads(line)["prompt"])
                    continue
                except (ValueError, KeyError):
                    pass
            out.append(line)
    return out


async def _attempt(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], rec: Record, t0: float, reach: Reach
) -> None:
    """One try of one request, filling `rec` in; a failed connection raises (httpx.ConnectError)."""
    async with client.stream("POST", url, json=body) as r:
        reach.ok()
        if r.status_code != 200:
            await r.aread()
            rec.error = f"http_{r.status_code}"
            try:
                rec.retry_after = float(r.headers.get("retry-after", ""))
            except ValueError:
                rec.retry_after = None
            return
        async for line in r.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                rec.error = "stream_error"
                return
            now = time.perf_counter() - t0
            if chunk.get("usage"):
                rec.output_tokens = chunk["usage"].get("completion_tokens", rec.output_tokens)
                rec.prompt_tokens = chunk["usage"].get("prompt_tokens", 0)
            if any(c.get("text") for c in chunk.get("choices") or []):
                if rec.ttft is None:
                    rec.ttft = now - rec.start
                rec.token_times.append(now)
    rec.end = time.perf_counter() - t0
    if not rec.output_tokens:
        rec.output_tokens = len(rec.token_times)


async def _one(
    client: httpx.AsyncClient, spec: LoadSpec, prompt: str | list[int], t0: float, reach: Reach
) -> Record:
    """One request, its connection tried again with backoff until it works or the server is unreachable."""
    rec = Record(start=time.perf_counter() - t0)
    body = {
        "model": spec.model, "prompt": prompt, "max_tokens": spec.output_len, "temperature": 0,
        "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True,
    }  # fmt: skip
    url, delay = spec.url.rstrip("/") + "/completions", BACKOFF_S
    while True:
        try:
            await _attempt(client, url, body, rec, t0, reach)
            return rec
        except (httpx.ConnectError, httpx.ConnectTimeout):
            if not reach.failed():
                rec.error = "connect"
                return rec
            rec.connect_retries += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # jitter: the clients do not retry in step
            delay = min(MAX_BACKOFF_S, delay * 2)
        except httpx.TimeoutException:
            rec.error = "timeout"
            return rec
        except (httpx.HTTPError, ValueError) as e:
            rec.error = type(e).__name__
            return rec


async def run_load(
    spec: LoadSpec, on_done: Callable[[Record], None] | None = None, reach: Reach | None = None
) -> tuple[list[Record], float]:
    """Run the load; returns (records, wall seconds). It ends early when the server is unreachable
    (`reach.unreachable` then says so)."""
    reach = reach or Reach(spec.url, spec.unreachable_s)
    headers = {"Authorization": f"Bearer {spec.api_key}"} if spec.api_key else {}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    timeout = httpx.Timeout(spec.timeout, connect=min(spec.timeout, 10.0))
    records: list[Record] = []
    t0 = time.perf_counter()
    deadline = t0 + spec.duration if spec.duration else None
    total = spec.num_prompts if spec.num_prompts else (None if spec.duration else len(spec.prompts))
    sent = 0

    def next_prompt() -> str | list[int] | None:
        nonlocal sent
        if (
            (total is not None and sent >= total)
            or (deadline is not None and time.perf_counter() >= deadline)
            or reach.unreachable
        ):
            return None
        p = spec.prompts[sent % len(spec.prompts)]
        sent += 1
        return p

    async def finish(rec: Record) -> None:
        records.append(rec)
        if on_done is not None:
            on_done(rec)

    async with httpx.AsyncClient(timeout=timeout, headers=headers, limits=limits) as client:
        if spec.request_rate:
            rnd = random.Random(spec.seed)
            gate = asyncio.Semaphore(spec.concurrency) if spec.concurrency else None
            tasks = []

            async def fire(p: str | list[int]) -> None:
                async with gate or contextlib.nullcontext():
                    if not reach.unreachable:  # else it is never sent
                        await finish(await _one(client, spec, p, t0, reach))

            while (p := next_prompt()) is not None:
                tasks.append(asyncio.create_task(fire(p)))
                await asyncio.sleep(rnd.expovariate(spec.request_rate))
            await asyncio.gather(*tasks)
        else:

            async def worker() -> None:
                while (p := next_prompt()) is not None:
                    rec = await _one(client, spec, p, t0, reach)
                    await finish(rec)
                    if rec.retry_after is not None:  # a refused client waits as asked, like real clients
                        await asyncio.sleep(min(rec.retry_after, 30.0))

            await asyncio.gather(*(worker() for _ in range(spec.concurrency or 1)))
    return records, time.perf_counter() - t0


def summarize(records: list[Record], wall: float, unreachable: str | None = None) -> dict[str, Any]:
    """Throughput, latency percentiles (ms), errors by kind (one per request, however often it tried to
    connect) and, when the run gave up on the server, why."""
    ok = [r for r in records if r.ok]
    itl: list[float] = []
    for r in ok:
        times = r.token_times
        if len(times) > 1 and r.output_tokens > 1:
            gap_total = times[-1] - times[0]
            itl.append(gap_total / (r.output_tokens - 1))
    out_tokens = sum(r.output_tokens for r in ok)
    errors: dict[str, int] = {}
    for r in records:
        if r.error:
            errors[r.error] = errors.get(r.error, 0) + 1
    return {
        "requests": len(records),
        "completed": len(ok),
        "errors": errors,
        "duration_s": round(wall, 3),
        "request_throughput": round(len(ok) / wall, 3) if wall else 0.0,
        "output_token_throughput": round(out_tokens / wall, 2) if wall else 0.0,
        "total_output_tokens": out_tokens,
        "total_prompt_tokens": sum(r.prompt_tokens for r in ok),
        "ttft_ms": percentiles([r.ttft for r in ok if r.ttft is not None]),
        "itl_ms": percentiles(itl),
        "e2e_ms": percentiles([r.end - r.start for r in ok if r.end is not None]),
        "connect_retries": sum(r.connect_retries for r in records),
        "unreachable": unreachable,
    }


def percentiles(xs: list[float]) -> dict[str, float | None]:
    """mean, p50, p90, p99 in milliseconds (None when there is no data)."""
    if not xs:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    s = sorted(xs)

    def q(p: float) -> float:
        i = min(len(s) - 1, max(0, round(p * (len(s) - 1))))
        return round(s[i] * 1000, 2)

    return {"mean": round(sum(s) / len(s) * 1000, 2), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99)}
