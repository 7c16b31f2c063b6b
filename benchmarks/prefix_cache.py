"""Prefix caching: time to first token with the cache on and off, in one run, same model, same requests.

    .venv/bin/python benchmarks/prefix_cache.py              # about 3 minutes on 2 cores
    .venv/bin/python benchmarks/prefix_cache.py --requests 3 --turns 4   # quicker

Part 1: a system prompt of about 1,000 tokens (WikiText-2 text) shared by every request, each request
with its own question; one warm-up request, then the rest one after another (streamed, greedy): median
TTFT with the cache on and off, and whether every greedy answer is the same both ways. Part 2: a chat of
10 turns, each turn sending the whole conversation so far plus a new question: TTFT per turn, on and off.
Each mode runs its own server (`--no-prefix-caching` for off); the prefix-cache counters are read from
/metrics.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import httpx
from maas_server import maas_server
from openai import OpenAI

ROOT = Path(__file__).resolve().parent.parent
WIKI = ROOT.parent / "shared" / "data" / "wikitext-2" / "test.txt"
QUESTIONS = [
    "Summarise the text in one sentence.", "Who is the text about?", "Name one place in the text.",
    "What happened first?", "Give the text a title.", "What year is mentioned?", "List two people.",
    "Is the text about sport?", "What is the tone of the text?", "Name a number in the text.",
]  # fmt: skip


def system_prompt(url: str, model: str, tokens: int) -> str:
    """WikiText-2 test text cut to about `tokens` tokens of the model's tokenizer."""
    words = " ".join(line.strip() for line in WIKI.read_text().splitlines() if line.strip()).split()
    lo, hi = 1, len(words)
    while lo < hi:  # the longest prefix of words within the budget
        mid = (lo + hi + 1) // 2
        n = httpx.post(url + "/tokenize", json={"model": model, "prompt": " ".join(words[:mid])}).json()[
            "count"
        ]
        lo, hi = (mid, hi) if n <= tokens else (lo, mid - 1)
    return "Answer questions about this text.\n\n" + " ".join(words[:lo])


def ask(client: OpenAI, model: str, messages: list[dict], max_tokens: int) -> tuple[float, str]:
    """(seconds to the first streamed token, the whole greedy answer)."""
    t0 = time.perf_counter()
    first = None
    text = ""
    stream = client.chat.completions.create(
        model=model, messages=messages, temperature=0, max_tokens=max_tokens, stream=True
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
            text += chunk.choices[0].delta.content
    return (first or time.perf_counter()) - t0, text


def metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


def run_mode(args: argparse.Namespace, cache: bool) -> dict:
    flags = [args.model, "--max-model-len", "4096", "--max-num-seqs", "4"]
    with maas_server(*flags, *([] if cache else ["--no-prefix-caching"])) as url:
        client = OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=600)
        system = system_prompt(url, args.model, args.system_tokens)
        n_sys = httpx.post(url + "/tokenize", json={"model": args.model, "messages": [
            {"role": "system", "content": system}]}).json()["count"]  # fmt: skip
        ask(
            client, args.model, [{"role": "system", "content": system}, {"role": "user", "content": "Hi."}], 4
        )
        shared, answers = [], []
        for q in QUESTIONS[: args.requests]:
            t, text = ask(
                client,
                args.model,
                [{"role": "system", "content": system}, {"role": "user", "content": q}],
                24,
            )
            shared.append(t)
            answers.append(text)
        convo = [{"role": "system", "content": "You are a helpful assistant."}]
        turns = []
        for q in (QUESTIONS * 2)[: args.turns]:
            convo.append(
                {"role": "user", "content": q + " " + system[200 * len(turns) : 200 * len(turns) + 400]}
            )
            t, text = ask(client, args.model, convo, 40)
            convo.append({"role": "assistant", "content": text})
            turns.append(t)
        n_convo = httpx.post(url + "/tokenize", json={"model": args.model, "messages": convo}).json()["count"]
        return {
            "shared": shared, "answers": answers, "turns": turns, "system_tokens": n_sys, "convo_tokens": n_convo,
            "hits": metric(url, "maas:prefix_cache_hits_total"),
            "queries": metric(url, "maas:prefix_cache_queries_total"),
        }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--system-tokens", type=int, default=1000, help="length of the shared system prompt")
    p.add_argument(
        "--requests", type=int, default=8, help="requests sharing the system prompt (after a warm-up)"
    )
    p.add_argument("--turns", type=int, default=10, help="turns of the multi-turn chat")
    args = p.parse_args()
    on = run_mode(args, cache=True)
    off = run_mode(args, cache=False)
    med_on, med_off = statistics.median(on["shared"]), statistics.median(off["shared"])
    same = on["answers"] == off["answers"]
    print(
        f"\nPrefix caching, {args.model}, system prompt {on['system_tokens']} tokens, {args.requests} requests"
    )
    print(f"{'':24}{'cache on':>12}{'cache off':>12}")
    print(
        f"{'TTFT median (ms)':24}{med_on * 1e3:12.1f}{med_off * 1e3:12.1f}   {med_off / med_on:.1f}x lower with the cache"
    )
    print(f"{'TTFT max (ms)':24}{max(on['shared']) * 1e3:12.1f}{max(off['shared']) * 1e3:12.1f}")
    print(f"greedy answers identical on and off: {same} ({sum(a == b for a, b in zip(on['answers'], off['answers'], strict=True))}"
          f"/{len(on['answers'])})")  # fmt: skip
    print(
        f"\nMulti-turn chat, {args.turns} turns ({on['convo_tokens']} tokens at the end): TTFT per turn (ms)"
    )
    print(f"{'turn':>6}{'cache on':>12}{'cache off':>12}")
    for i, (a, b) in enumerate(zip(on["turns"], off["turns"], strict=True), 1):
        print(f"{i:6}{a * 1e3:12.1f}{b * 1e3:12.1f}")
    half = len(on["turns"]) // 2
    for name, r in (("on", on), ("off", off)):
        early, late = statistics.mean(r["turns"][1:half]), statistics.mean(r["turns"][half:])
        print(f"cache {name}: mean TTFT turns 2-{half} {early * 1e3:.1f} ms, turns {half + 1}-{len(r['turns'])} "
              f"{late * 1e3:.1f} ms ({late / early:.2f}x)")  # fmt: skip
    print(f"prefix cache counters (cache on): {on['hits']:.0f} of {on['queries']:.0f} prompt tokens reused")


if __name__ == "__main__":
    main()
