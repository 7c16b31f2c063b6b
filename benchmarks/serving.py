"""Serving benchmark: maas (a real server over HTTP) next to llama.cpp on the same GGUF file.

    python benchmarks/serving.py                        # maas, plus llama.cpp when available
    python benchmarks/serving.py --concurrency 1,32 --gen 64 --llamacpp none

Measures, for each concurrency C: aggregate decode tokens/s (the sum over streams of each
stream's tokens after the first divided by its time after the first token, like llama.cpp's
S_TG), and end-to-end output tokens/s; then time to first token for a 512-token prompt (the median of five
prompts, `--ttft-repeats`; llama.cpp's: its prompt time, the median of as many runs) and resident memory: the engine process's
after loading (idle) and at its peak, and the whole server's peak.

llama.cpp comes from `../shared/tools/llamacpp-anchor` (llama.cpp's own batched bench, built
once from the llama-cpp-python sources) or, failing that, from the `llama_cpp` Python package
(one sequence at a time, so only C=1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
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


async def one_stream(
    client: httpx.AsyncClient, url: str, model: str, prompt: list[int], gen: int
) -> tuple[float, list[float], int]:
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


async def run_level(url: str, model: str, c: int, prompt_len: int, gen: int) -> Row:
    async with httpx.AsyncClient(timeout=600) as client:
        t0 = time.perf_counter()
        res = await asyncio.gather(
            *(one_stream(client, url, model, synthetic_prompt(prompt_len, i), gen) for i in range(c))
        )
        wall = time.perf_counter() - t0
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
    async with httpx.AsyncClient(timeout=600) as client:
        times = []
        for i in range(repeats):
            t0, stamps, _ = await one_stream(client, url, model, synthetic_prompt(prompt_len, 100 + i), 2)
            times.append(stamps[0] - t0)
    return statistics.median(times)


def bench_maas(args: argparse.Namespace, levels: list[int]) -> dict:
    port = free_port()
    cmd = [sys.executable, "-m", "maas.cli.main", "serve", args.model, "--port", str(port),
           "--max-num-seqs", str(max(levels)), "--max-model-len", str(max(args.prompt_len + args.gen, args.ttft_len) + 16),
           *args.maas_args.split()]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise SystemExit(f"maas serve exited with {proc.returncode}: {' '.join(cmd)}")
            time.sleep(0.5)
        model = httpx.get(url + "/v1/models").json()["data"][0]["id"]
        asyncio.run(run_level(url, model, 1, 16, 4))  # warm-up
        mem = PeakRSS(proc.pid)
        rows = []
        for c in levels:
            rows.append(asyncio.run(run_level(url, model, c, args.prompt_len, args.gen)))
            print(f"  maas C={c}: decode {rows[-1].decode_tps:.1f} tok/s", file=sys.stderr)
        t = asyncio.run(ttft(url, model, args.ttft_len, args.ttft_repeats))
        peak = mem.stop()
        return {"rows": rows, "ttft": t, "peak_mib": peak, "engine_idle_mib": mem.idle_children,
                "engine_peak_mib": mem.peak_children}  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(30)


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
    return {"rows": rows, "ttft": t, "peak_mib": peak, "source": "llama.cpp llama-batched-bench"}


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
            "source": "llama-cpp-python (one sequence at a time)"}  # fmt: skip


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


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
    p.add_argument("--llamacpp", choices=["auto", "anchor", "python", "none"], default="auto")
    p.add_argument("--maas-args", default="", help="extra flags for `maas serve` (e.g. '--weights float32')")
    args = p.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]

    ours = bench_maas(args, levels)
    direct = bench_engine(args, levels)
    other = None
    if args.llamacpp in ("auto", "anchor"):
        other = bench_anchor(args, levels)
    if other is None and args.llamacpp in ("auto", "python"):
        other = bench_llama_cpp_python(args)

    name = other["source"] if other else "llama.cpp (not available)"
    print(f"\nmodel {args.model}, prompt {args.prompt_len} tokens, {args.gen} generated per stream; "
          f"{os.cpu_count()} CPU cores; baseline: {name}")  # fmt: skip
    print("decode tokens/s, all streams together (prefill excluded)")
    head = ["streams", "maas engine", "maas over HTTP", "llama.cpp", "engine/llama.cpp", "HTTP/llama.cpp"]
    print(" | ".join(f"{h:>16}" for h in head))
    by = {r.concurrency: r for r in (other or {}).get("rows", [])}
    for r in ours["rows"]:
        o = by.get(r.concurrency)
        od = o.decode_tps if o else None
        d = direct.get(r.concurrency)
        cells = [str(r.concurrency), f"{d:.1f}" if d else "-", f"{r.decode_tps:.1f}", f"{od:.1f}" if od else "-",
                 ratio(d, od), ratio(r.decode_tps, od)]  # fmt: skip
        print(" | ".join(f"{c:>16}" for c in cells))
    print("end-to-end output tokens/s over HTTP (prefill included): "
          + ", ".join(f"C={r.concurrency}: {r.e2e_tps:.1f}" for r in ours["rows"]))  # fmt: skip
    ot = other.get("ttft") if other else None
    print(f"time to first token, {args.ttft_len}-token prompt: maas {ours['ttft'] * 1000:.0f} ms"
          + (f", llama.cpp {ot * 1000:.0f} ms ({ratio(ours['ttft'], ot)} of its time)" if ot else ""))  # fmt: skip
    op = other.get("peak_mib") if other else None
    print(
        f"resident memory: maas engine process idle {ours['engine_idle_mib']:.0f} MiB, peak "
        f"{ours['engine_peak_mib']:.0f} MiB ({ratio(ours['engine_peak_mib'], op)} of llama.cpp's peak); "
        f"maas server with its engine, peak {ours['peak_mib']:.0f} MiB"
        + (f"; llama.cpp peak {op:.0f} MiB" if op else "")
    )


if __name__ == "__main__":
    main()
