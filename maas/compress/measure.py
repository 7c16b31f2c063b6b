"""Measure one model in a fresh process: speed and peak memory (what `maas compare` tabulates).

    python -m maas.compress.measure PATH KIND [--streams 1,16] [--tokens 32]   # prints one JSON object

LMs: decode tokens/s with 1 and 16 concurrent streams on the serving engine (prefill excluded).
Encoders: sentences/s one at a time and in batches of 16. Classifiers: examples/s likewise.
Peak RSS is the process's high-water mark after loading and running: one model per process.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def _lm(path: Path, tokens: int, most: int) -> tuple[str, Callable[[int], float]]:
    from maas.engine.llm.engine import Engine, EngineConfig
    from maas.engine.llm.sampling_params import SamplingParams

    engine = Engine.from_path(path, EngineConfig(max_num_seqs=most, max_model_len=256))
    prompt = engine.tokenizer.encode("The history of the city begins in the early middle ages, when")
    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)

    def rate(n: int) -> float:
        for i in range(n):
            engine.add_request(f"{n}-{i}", prompt, params)
        started: set[str] = set()
        t0, counted = 0.0, 0
        while engine.has_unfinished():
            outs = engine.step()
            if len(started) == n:
                counted += sum(len(o.token_ids) for o in outs)
            started.update(o.request_id for o in outs)
            if len(started) == n and not t0:
                t0 = time.perf_counter()  # every stream has its first token: decoding from here
        return counted / max(time.perf_counter() - t0, 1e-9)

    return "decode_tok_s", rate


def _encoder(path: Path, rounds: int) -> tuple[str, Callable[[int], float]]:
    from maas.engine.embedding.embedder import Embedder

    e = Embedder(path)
    text = ["Compression trades a little quality for a smaller and faster model."]

    def rate(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(rounds):
            e.embed_texts(text * n)
        return rounds * n / (time.perf_counter() - t0)

    return "sentences_s", rate


def _classifier(path: Path, rounds: int) -> tuple[str, Callable[[int], float]]:
    from maas.compress.evaluate import onnx_classifier
    from maas.formats.detect import model_format
    from maas.models.exported import load_exported, read_meta

    if model_format(path) == "onnx":  # the graph on ONNX Runtime, fed the shape its signature declares
        from maas.formats.onnx import onnx_signature

        model: Callable[[torch.Tensor], torch.Tensor] = onnx_classifier(path)
        shape = [max(d, 1) for d in onnx_signature(path).inputs[0].shape[1:]]
    else:
        model = load_exported(path)
        shape = read_meta(path).get("input_shape") or [1]

    @torch.inference_mode()
    def rate(n: int) -> float:
        x = torch.rand(n, *shape)
        t0 = time.perf_counter()
        for _ in range(rounds):
            model(x)
        return rounds * n / (time.perf_counter() - t0)

    return "examples_s", rate


def measure(path: Path, kind: str, streams: list[int], tokens: int) -> dict[str, Any]:
    """Load and run the model; its speed at each of `streams` and this process's peak RSS."""
    if kind == "llm":
        unit, rate = _lm(path, tokens, max(streams))
    elif kind == "embedding":
        unit, rate = _encoder(path, tokens)
    else:
        unit, rate = _classifier(path, tokens * 10)
    rate(streams[0])  # a warm-up run (kernels compiled, caches touched)
    speed = {f"{unit}_{n}": rate(n) for n in streams}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"speed": speed, "peak_rss_bytes": peak}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: print the measurement as one JSON line."""
    p = argparse.ArgumentParser(description="Measure one model (used by `maas compare`).")
    p.add_argument("path")
    p.add_argument("kind", choices=["llm", "embedding", "tensor"])
    p.add_argument("--streams", default="1,16")
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    streams = [int(s) for s in a.streams.split(",")]
    print(json.dumps(measure(Path(a.path), a.kind, streams, a.tokens)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
