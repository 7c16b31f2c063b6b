"""The cost of grammar-constrained decoding: decode tok/s at 1 and 16 streams, free and with a JSON schema,
on one server in one run.

    .venv/bin/python benchmarks/structured_outputs.py        # about a minute on 2 cores

Every stream generates exactly --gen tokens: the free runs ignore EOS; the constrained runs follow a JSON
schema (an array of at least 500 integers) that cannot end before --gen tokens. Decode tok/s counts the
tokens after each stream's first (from the usage chunk), over the window in which every stream is
generating.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx
from maas_server import maas_server

SCHEMA = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 999}, "minItems": 500}


async def one_stream(
    client: httpx.AsyncClient, url: str, model: str, i: int, gen: int, guided: bool
) -> list[float]:
    body = {
        "model": model,
        "prompt": f"Here are {i + 3} lists of numbers as JSON arrays:\n",
        "max_tokens": gen,
        "temperature": 0.8,
        "seed": i,
        "stream": True,
        "stream_options": {"include_usage": True},
        **({"response_format": {"type": "json_schema", "json_schema": {"name": "nums", "schema": SCHEMA}}}
           if guided else {"ignore_eos": True}),
    }  # fmt: skip
    stamps: list[float] = []
    n = 0
    async with client.stream("POST", url + "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                obj = json.loads(line[6:])
                if obj.get("usage"):
                    n = obj["usage"]["completion_tokens"]
                if obj["choices"] and obj["choices"][0]["text"]:
                    stamps.append(time.perf_counter())
    return stamps, n


async def decode_rate(url: str, model: str, streams: int, gen: int, guided: bool) -> float:
    async with httpx.AsyncClient(timeout=600) as client:
        res = await asyncio.gather(*(one_stream(client, url, model, i, gen, guided) for i in range(streams)))
    # a chunk may carry several tokens (text held back until a character is whole): each stream's n - 1
    # tokens after its first are taken as spread evenly from its first chunk to its last
    start = max(s[0] for s, _ in res)
    end = min(s[-1] for s, _ in res)
    inside = sum((n - 1) * (end - start) / (s[-1] - s[0]) for s, n in res if s[-1] > s[0])
    return inside / (end - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--gen", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="runs per cell; the best is kept")
    args = p.parse_args()
    with maas_server(args.model, "--max-num-seqs", "16", "--max-model-len", "512") as url:
        for guided in (False, True):  # warm-up: batch shapes, the grammar engine's token table
            asyncio.run(decode_rate(url, args.model, 16, 16, guided))
        rows = []
        for streams in (1, 16):
            best = {False: 0.0, True: 0.0}
            for _ in range(args.repeats):  # alternating, so that drift in the machine hits both
                for guided in (False, True):
                    rate = asyncio.run(decode_rate(url, args.model, streams, args.gen, guided))
                    best[guided] = max(best[guided], rate)
            rows.append((streams, best[False], best[True]))
    print(f"\nDecode tok/s, {args.model}, {args.gen} tokens per stream (best of {args.repeats})")
    print(f"{'streams':>8}{'free':>10}{'json_schema':>13}{'constrained/free':>18}")
    for streams, free, guided in rows:
        print(f"{streams:8}{free:10.1f}{guided:13.1f}{guided / free:17.2f}x")


if __name__ == "__main__":
    main()
