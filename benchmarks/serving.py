"""Serving benchmark: maas (a real server over HTTP) next to llama.cpp on the same GGUF file.

    python benchmarks/serving.py                        # maas vs llama-server, both over HTTP
    python benchmarks/serving.py --concurrency 1,4 --gen 16            # a quick run
    python benchmarks/serving.py --llamacpp anchor --engine   # the engine in-process vs llama-batched-bench
    python benchmarks/serving.py --concurrency 1,32 --gen 64 --llamacpp none

Both servers are started here (`maas serve`; `llama-server` with one slot per stream of the largest
concurrency) and driven by the same client with the same requests: streaming /v1/completions, token-id
prompts, greedy, every stream generating `--gen` tokens. For each concurrency C they are compared on
aggregate decode tokens/s (the tokens every stream received while all were past their prefill and still
generating, over that window, like llama.cpp's S_TG), end-to-end output tokens/s (prefill included), then
on time to first token for a 512-token prompt (the median of five prompts, `--ttft-repeats`) and on peak
resident memory of the whole server (maas's: its front process and engine process together; the engine
process's memory after loading and at its peak is printed too).

llama.cpp comes from `../shared/tools/llamacpp-anchor`, which builds `llama-server` and
`llama-batched-bench` once from the llama-cpp-python sources (minutes, the first time).
`--llamacpp auto` takes llama-server, else llama-batched-bench (llama.cpp's own batched bench, no
HTTP: compare it with the maas engine in this process, `--engine`; its time to first token is its
prompt time), else the `llama_cpp` Python package (one sequence at a time, so only C=1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
ANCHOR = ROOT.parent / "shared" / "tools" / "llamacpp-anchor"


@dataclass
class Row:
    concurrency: int
    decode_tps: float
    e2e_tps: float


class PeakRSS:
    """Samples a process tree's resident memory in a thread, in MiB: `peak` of the whole tree,
    `peak_children` of its child processes (maas's engine), `idle_children` when sampling began.

    The tree is listed once a second (listing scans every process on the machine); in between only the known
    processes' memory is read, so that sampling takes next to no CPU from what it measures."""

    def __init__(self, pid: int):
        self.proc = psutil.Process(pid)
        self.peak = self.peak_children = 0.0
        self._kids: list[psutil.Process] = []
        self._listed = 0.0
        self.idle_children = self._children()
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _children(self) -> float:
        try:
            if time.monotonic() - self._listed > 1.0:
                self._kids, self._listed = self.proc.children(recursive=True), time.monotonic()
            total = 0
            for p in self._kids:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    self._listed = 0.0  # one has gone: list again next time
            return total / 2**20
        except psutil.Error:
            return 0.0

    def _run(self) -> None:
        while not self._stop:
            try:
                children = self._children()
                self.peak_children = max(self.peak_children, children)
                self.peak = max(self.peak, children + self.proc.memory_info().rss / 2**20)
            except psutil.Error:
                pass
            time.sleep(0.05)

    def stop(self) -> float:
        self._stop = True
        self._t.join()
        return self.peak


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def synthetic_prompt(n: int, seed: int) -> list[int]:
    """n token ids of ordinary vocabulary (ids 1000..20000), different per stream."""
    return [1000 + (seed * 7919 + i * 104729) % 19000 for i in range(n)]


def client_() -> httpx.AsyncClient:
    """A connection per request, for both servers: a request sent on a connection llama-server (cpp-httplib) had
    kept alive once failed with "Server disconnected without sending a response" (the server closing it as the
    request went out); a fresh connection cannot meet that race."""
    return httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_keepalive_connections=0))


async def one_stream(
    client: httpx.AsyncClient, url: str, model: str, prompt: list[int], gen: int
) -> tuple[float, list[float], int]:
    # one body for both servers: llama-server reads a token-id list as `prompt`, `max_tokens` (its n_predict),
    # `ignore_eos` (its own field), `temperature` 0 (greedy) and `stream_options.include_usage` as maas does
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": gen,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    stamps: list[float] = []
    n = 0
    async with client.stream("POST", url + "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            obj = json.loads(line[6:])
            if obj.get("usage"):
                n = obj["usage"]["completion_tokens"]
            if obj["choices"] and obj["choices"][0]["text"]:
                stamps.append(time.perf_counter())
    return t0, stamps, n


async def run_level(url: str, model: str, c: int, prompt_len: int, gen: int, seed0: int | None = None) -> Row:
    # prompts of this level's own (seeds 1000 + c(c-1)/2 + i, apart for every c): both servers cache prompt
    # prefixes, and a prompt seen at an earlier level would skip its prefill
    seed0 = 1000 + c * (c - 1) // 2 if seed0 is None else seed0
    async with client_() as client:
        t0 = time.perf_counter()
        res = await asyncio.gather(
            *(one_stream(client, url, model, synthetic_prompt(prompt_len, seed0 + i), gen) for i in range(c))
        )
        wall = time.perf_counter() - t0
    if any(n != gen for _, _, n in res):
        raise RuntimeError(f"{url}: streams generated {sorted({n for _, _, n in res})} tokens, not {gen}")
    # decode throughput over the window in which every stream is past its prefill and still
    # generating (what llama.cpp's S_TG measures; prefill chunks of late arrivals are excluded):
    # the chunks each stream received inside the window, counted at the stream's tokens per chunk
    # (a chunk may carry several tokens: text is held back until a character is whole). A stream
    # that started early decoded its first tokens between other streams' prefill chunks, slower
    # than inside the window, so its whole-life average rate would undercount the window.
    start = max(st[0] for _, st, _ in res)
    end = min(st[-1] for _, st, _ in res)
    inside = sum(
        sum(start < t <= end for t in st) * (n - 1) / (len(st) - 1) for _, st, n in res if len(st) > 1
    )
    decode = inside / (end - start) if end > start else float("nan")
    return Row(c, decode, sum(r[2] for r in res) / wall)


async def ttft(url: str, model: str, prompt_len: int, repeats: int) -> float:
    async with client_() as client:
        times = []
        for i in range(repeats):
            t0, stamps, _ = await one_stream(client, url, model, synthetic_prompt(prompt_len, 100 + i), 2)
            times.append(stamps[0] - t0)
    return statistics.median(times)


def wait_healthy(
    proc: subprocess.Popen, url: str, what: str, timeout_s: float, log: str | None = None
) -> None:
    """Until `url`/health answers 200 with status "ok" (maas and llama-server both do once loaded); with a
    `log` (the process's output), its last line every 15 s meanwhile."""
    t0 = shown = time.monotonic()
    while True:
        try:
            r = httpx.get(url + "/health", timeout=2)
            if r.status_code == 200 and r.json().get("status") == "ok":
                return
        except (httpx.HTTPError, ValueError):
            pass
        if proc.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {proc.returncode}" + (f"; its output: {log}" if log else "")
            )
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(
                f"{what} not ready after {timeout_s:.0f} s" + (f"; its output: {log}" if log else "")
            )
        if log and time.monotonic() - shown >= 15:
            shown = time.monotonic()
            last = (Path(log).read_text(errors="replace").strip().splitlines() or [""])[-1]
            print(f"  waiting for {what}, {shown - t0:.0f} s: {last[:120]}", file=sys.stderr)
        time.sleep(0.5)


def measure(url: str, pid: int, name: str, args: argparse.Namespace, levels: list[int]) -> dict:
    """The same requests against either server: a warm-up, each concurrency level, then time to first token;
    the peak resident memory of the server's process tree over all of it."""
    model = httpx.get(url + "/v1/models").json()["data"][0]["id"]
    asyncio.run(run_level(url, model, 1, 16, 4, seed0=50))  # warm-up
    mem = PeakRSS(pid)
    rows = []
    for c in levels:
        rows.append(asyncio.run(run_level(url, model, c, args.prompt_len, args.gen)))
        print(
            f"  {name} C={c}: decode {rows[-1].decode_tps:.1f} tok/s, e2e {rows[-1].e2e_tps:.1f}",
            file=sys.stderr,
        )
    t = asyncio.run(ttft(url, model, args.ttft_len, args.ttft_repeats))
    return {"rows": rows, "ttft": t, "peak_mib": mem.stop(), "engine_idle_mib": mem.idle_children,
            "engine_peak_mib": mem.peak_children}  # fmt: skip


def bench_maas(args: argparse.Namespace, levels: list[int]) -> dict:
    port = free_port()
    cmd = [sys.executable, "-m", "maas.cli.main", "serve", args.model, "--port", str(port),
           "--max-num-seqs", str(max(levels)), "--max-model-len", str(max_len(args)),
           *args.maas_args.split()]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url, "maas serve", 300)
        return measure(url, proc.pid, "maas", args, levels)
    finally:
        proc.terminate()
        proc.wait(30)


def max_len(args: argparse.Namespace) -> int:
    """Tokens one stream may hold: maas's --max-model-len, llama-server's context per slot."""
    return max(args.prompt_len + args.gen, args.ttft_len) + 16


def bench_server(args: argparse.Namespace, levels: list[int]) -> dict | None:
    """llama-server from the anchor tool (built there the first time), on a free loopback port, one slot per
    stream of the largest level, each slot as long as maas's --max-model-len; measured like maas."""
    if not ANCHOR.exists():
        return None
    slots = max(levels)
    ctx = max(8192, slots * max_len(args))  # llama-server splits -c evenly among its -np slots
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = ["bash", str(ANCHOR), "--server", str(_model_path(args.model)), "--host", "127.0.0.1",
           "--port", str(port), "-np", str(slots), "-c", str(ctx)]  # fmt: skip
    with tempfile.NamedTemporaryFile("w", prefix="llama-server-", suffix=".log", delete=False) as log:
        print(f"  starting llama-server (its output: {log.name})", file=sys.stderr)
        # a session of its own, so that stopping it also stops a build the anchor may be running
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_healthy(proc, url, "llama-server", 3600, log.name)
            out = measure(url, proc.pid, "llama-server", args, levels)
        finally:
            stop_group(proc)
    Path(log.name).unlink()
    return out | {"source": f"llama.cpp llama-server over HTTP (-np {slots} -c {ctx})", "label": "llama-server",
                  "http": True}  # fmt: skip


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group `proc` leads (SIGKILL after 30 s)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(30)
            return
        except subprocess.TimeoutExpired:
            pass


def bench_engine(args: argparse.Namespace, levels: list[int]) -> dict[int, float]:
    """The engine in this process, no HTTP: prefill every stream, then time decode steps only
    (the same split as llama-batched-bench's S_TG)."""
    from maas.engine.llm.engine import Engine, EngineConfig
    from maas.engine.llm.sampling_params import SamplingParams

    extra = args.maas_args.split()
    weights = extra[extra.index("--weights") + 1] if "--weights" in extra else "auto"
    cfg = EngineConfig(
        max_num_seqs=max(levels), max_model_len=args.prompt_len + args.gen + 16, weights=weights
    )
    engine = Engine.from_path(_model_path(args.model), cfg)
    params = SamplingParams(temperature=0, max_tokens=args.gen, ignore_eos=True)
    out = {}
    for c in levels:
        out[c] = engine_decode_rate(engine, c, args.prompt_len, params)
        print(f"  maas engine C={c}: decode {out[c]:.1f} tok/s", file=sys.stderr)
    return out


def engine_decode_rate(engine: Any, c: int, prompt_len: int, params: Any) -> float:
    """Decode tokens/s of `engine` (in this process) over c synthetic prompts: every prompt prefilled first,
    then the decode steps timed until all finish."""
    for i in range(c):
        engine.add_request(f"b{c}-{i}-{time.monotonic_ns()}", synthetic_prompt(prompt_len, i), params)
    while (
        any(s.num_computed_tokens < s.num_prompt_tokens for s in engine.scheduler.running)
        or engine.num_waiting
    ):
        engine.step()
    steps, t0 = 0, time.perf_counter()
    while engine.has_unfinished():
        engine.step()
        steps += 1
    return c * steps / (time.perf_counter() - t0)


def _model_path(name: str) -> Path:
    from maas.store.locate import resolve

    return resolve(name)[1]


def bench_anchor(args: argparse.Namespace, levels: list[int]) -> dict | None:
    if not ANCHOR.exists():
        return None
    gguf = str(_model_path(args.model))

    def run(*extra: str) -> tuple[str, float]:
        p = subprocess.Popen(
            ["bash", str(ANCHOR), gguf, *extra], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        mem = PeakRSS(p.pid)
        out, _ = p.communicate()
        return out, mem.stop()

    npl = ",".join(map(str, levels))
    out, peak = run("-npp", str(args.prompt_len), "-ntg", str(args.gen), "-npl", npl)
    rows = []
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 10 and cells[0].isdigit():
            tg, b = int(cells[1]), int(cells[2])
            t_total = float(cells[8])
            rows.append(Row(b, float(cells[7]), b * tg / t_total))
    prefills = []  # several runs, the median, like maas's time to first token (one run varies by 30%)
    for _ in range(args.ttft_repeats):
        out2, _ = run("-npp", str(args.ttft_len), "-ntg", "1", "-npl", "1")
        for line in out2.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 10 and cells[0].isdigit():
                prefills.append(float(cells[4]))
    t = statistics.median(prefills) if prefills else None
    if not rows:
        return None
    return {
        "rows": rows,
        "ttft": t,
        "peak_mib": peak,
        "source": "llama.cpp llama-batched-bench (no HTTP)",
        "label": "llama.cpp",
    }


def bench_llama_cpp_python(args: argparse.Namespace) -> dict | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    llm = Llama(str(_model_path(args.model)), n_ctx=4096, n_threads=os.cpu_count(), verbose=False)
    prompt = synthetic_prompt(args.prompt_len, 0)
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    tokens = 0
    t1 = time.perf_counter()
    for _ in range(args.gen):
        tok = llm.sample(temp=0)
        llm.eval([tok])
        tokens += 1
    decode = tokens / (time.perf_counter() - t1)
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(synthetic_prompt(args.ttft_len, 1))
    llm.sample(temp=0)
    t = time.perf_counter() - t0
    return {"rows": [Row(1, decode, decode)], "ttft": t, "peak_mib": psutil.Process().memory_info().rss / 2**20,
            "source": "llama-cpp-python (one sequence at a time, no HTTP)", "label": "llama.cpp"}  # fmt: skip


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def table(head: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    for r in [head, *rows]:
        print(
            "  ".join(
                f"{c:>{w}}" if i else f"{c:<{w}}" for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )


def num(x: float | None, scale: float = 1, fmt: str = ".1f") -> str:
    return f"{x * scale:{fmt}}" if x else "-"


def report(args: argparse.Namespace, ours: dict, other: dict | None, direct: dict[int, float] | None) -> None:
    name = other["label"] if other else "llama.cpp"
    print(f"\nmodel {args.model}, prompt {args.prompt_len} tokens, {args.gen} generated per stream; "
          f"{os.cpu_count()} CPU cores; baseline: {other['source'] if other else 'none'}")  # fmt: skip
    print("tokens/s of all streams together; decode: while every stream decodes (prefill excluded), e2e: the "
          "whole run (prefill included)")  # fmt: skip
    head = [
        "streams",
        "maas decode",
        f"{name} decode",
        f"maas/{name}",
        "maas e2e",
        f"{name} e2e",
        f"maas/{name}",
    ]
    if direct:
        head += ["maas engine decode (no HTTP)", f"engine/{name}"]
    by = {r.concurrency: r for r in (other or {}).get("rows", [])}
    rows = []
    for r in ours["rows"]:
        o = by.get(r.concurrency)
        od, oe = (o.decode_tps, o.e2e_tps) if o else (None, None)
        row = [str(r.concurrency), num(r.decode_tps), num(od), ratio(r.decode_tps, od), num(r.e2e_tps), num(oe),
               ratio(r.e2e_tps, oe)]  # fmt: skip
        if direct:
            d = direct.get(r.concurrency)
            row += [num(d), ratio(d, od)]
        rows.append(row)
    table(head, rows)
    ot, op = (other.get("ttft"), other.get("peak_mib")) if other else (None, None)
    print()
    table(
        ["", "maas", name, f"maas/{name}"],
        [
            [
                f"time to first token, {args.ttft_len}-token prompt (ms)",
                num(ours["ttft"], 1000, ".0f"),
                num(ot, 1000, ".0f"),
                ratio(ours["ttft"], ot),
            ],
            [
                "peak resident memory, whole server (MiB)",
                num(ours["peak_mib"], 1, ".0f"),
                num(op, 1, ".0f"),
                ratio(ours["peak_mib"], op),
            ],
        ],  # fmt: skip
    )
    print(f"maas engine process: {ours['engine_idle_mib']:.0f} MiB after loading, "
          f"{ours['engine_peak_mib']:.0f} MiB at its peak")  # fmt: skip


def baseline(args: argparse.Namespace, levels: list[int]) -> dict | None:
    """llama.cpp as `--llamacpp` asks; auto: llama-server, else llama-batched-bench, else llama-cpp-python."""
    mode = args.llamacpp
    if mode in ("auto", "server"):
        try:
            if (out := bench_server(args, levels)) is not None:
                return out
        except (RuntimeError, httpx.HTTPError) as e:
            if mode == "server":
                raise
            print(f"  llama-server failed ({e}); trying llama-batched-bench", file=sys.stderr)
    if mode in ("auto", "anchor") and (out := bench_anchor(args, levels)) is not None:
        return out
    if mode in ("auto", "python"):
        return bench_llama_cpp_python(args)
    return None


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="smollm2-135m-instruct", help="built-in name or GGUF path")
    p.add_argument("--concurrency", default="1,4,16,32", help="comma-separated stream counts")
    p.add_argument("--prompt-len", type=int, default=128, help="prompt tokens per stream")
    p.add_argument("--gen", type=int, default=64, help="generated tokens per stream")
    p.add_argument("--ttft-len", type=int, default=512, help="prompt tokens for the time-to-first-token run")
    p.add_argument(
        "--ttft-repeats", type=int, default=5, help="prompts (and llama.cpp runs) whose median it is"
    )
    p.add_argument(
        "--llamacpp",
        choices=["auto", "server", "anchor", "python", "none"],
        default="auto",
        help="baseline: llama-server over HTTP, llama-batched-bench, llama-cpp-python, none; "
        "auto: the first of these that runs",
    )
    p.add_argument(
        "--engine",
        action="store_true",
        help="also the maas engine in this process, no HTTP (always when the baseline is not llama-server)",
    )
    p.add_argument("--maas-args", default="", help="extra flags for `maas serve` (e.g. '--weights float32')")
    args = p.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]

    try:
        ours = bench_maas(args, levels)
        other = baseline(args, levels)
    except (RuntimeError, httpx.HTTPError) as e:
        raise SystemExit(f"serving.py: {e}") from None
    direct = bench_engine(args, levels) if args.engine or not (other and other.get("http")) else None
    report(args, ours, other, direct)


if __name__ == "__main__":
    main()
