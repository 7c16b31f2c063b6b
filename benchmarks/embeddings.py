"""Embeddings benchmark: maas (a real server over HTTP, and the embedder in-process) next to
sentence-transformers' `encode` on the same model and the same sentences, in one run.

    python benchmarks/embeddings.py                    # all-minilm-l6-v2, 512 wikitext-2 sentences
    python benchmarks/embeddings.py --sentences 1024 --clients 32

Reports sentences/s for requests of 1, 32 and 256 sentences, and for 32 concurrent clients each
sending one sentence per request (async clients on one event loop, so that the load generator
takes little of the CPU it shares with the server), next to the same single-sentence requests
sent one by one (what dynamic batching buys). Every phase is run once to warm up, then timed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
WIKI = ROOT.parent / "shared" / "data" / "wikitext-2" / "valid.txt"


def sentences(n: int) -> list[str]:
    """Real sentences from wikitext-2 (validation split), in file order."""
    out: list[str] = []
    for line in WIKI.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if len(line) > 30 and not line.startswith("="):
            out.extend(s.strip() + "." for s in line.split(" . ") if len(s.strip()) > 20)
        if len(out) >= n:
            break
    return out[:n]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rate(n: int, fn) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def chunks(xs: list[str], b: int) -> list[list[str]]:
    return [xs[i : i + b] for i in range(0, len(xs), b)]


def bench_st(texts: list[str], model_dir: Path, sizes: list[int], n_single: int) -> dict[str, float]:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir), device="cpu")
    out = {}
    for b in sizes:
        xs = texts[:n_single] if b == 1 else texts

        def run(xs: list[str] = xs, b: int = b) -> None:
            for c in chunks(xs, b):
                st.encode(c, batch_size=b, show_progress_bar=False)

        out[f"batch {b}"] = rate(len(xs), run)
        print(f"  sentence-transformers batch {b}: {out[f'batch {b}']:.1f} sentences/s", file=sys.stderr)
    return out


def bench_engine(texts: list[str], model_dir: Path, sizes: list[int], n_single: int) -> dict[str, float]:
    from maas.engine.embedding.embedder import Embedder

    e = Embedder(model_dir)
    out = {}
    for b in sizes:
        xs = texts[:n_single] if b == 1 else texts

        def run(xs: list[str] = xs, b: int = b) -> None:
            for c in chunks(xs, b):
                e.embed_texts(c, batch_size=b, truncate=True)

        out[f"batch {b}"] = rate(len(xs), run)
    return out


def bench_http(args: argparse.Namespace, texts: list[str], sizes: list[int]) -> dict[str, float]:
    port = free_port()
    cmd = [sys.executable, "-m", "maas.cli.main", "serve", args.model, "--port", str(port), "--no-registry"]
    env = {**os.environ, "MAAS_AUTO_IMPORT_BUILTINS": "0"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}/v1/embeddings"
    out: dict[str, float] = {}
    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise SystemExit(f"maas serve exited with {proc.returncode}: {' '.join(cmd)}")
            time.sleep(0.5)
        client = httpx.Client(timeout=300)

        def post(batch: list[str]) -> None:
            r = client.post(url, json={"model": args.model, "input": batch, "truncate": True})
            r.raise_for_status()

        singles = texts[: args.single]
        for b in sizes:
            xs = singles if b == 1 else texts
            out[f"batch {b}"] = rate(len(xs), lambda xs=xs, b=b: [post(c) for c in chunks(xs, b)])
            print(f"  maas HTTP batch {b}: {out[f'batch {b}']:.1f} sentences/s", file=sys.stderr)

        def concurrent(items: list[str]) -> None:
            """`args.clients` clients on one event loop, each sending its share one sentence at a time."""

            async def main() -> None:
                limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
                async with httpx.AsyncClient(timeout=300, limits=limits) as c:

                    async def worker(k: int) -> None:
                        for t in items[k :: args.clients]:
                            body = {"model": args.model, "input": t, "truncate": True}
                            (await c.post(url, json=body)).raise_for_status()

                    await asyncio.gather(*(worker(k) for k in range(args.clients)))

            asyncio.run(main())

        out["concurrent"] = rate(len(texts), lambda: concurrent(texts))
        print(
            f"  maas HTTP {args.clients} concurrent clients: {out['concurrent']:.1f} sentences/s",
            file=sys.stderr,
        )

        # Short queries (search-box length): one by one, then the same from concurrent clients.
        queries = [" ".join(t.split()[:6]) for t in texts]
        out["queries one by one"] = rate(args.single, lambda: [post([q]) for q in queries[: args.single]])
        out["queries concurrent"] = rate(len(queries), lambda: concurrent(queries))
        return out
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model", default="all-minilm-l6-v2", help="built-in name, registry name or HF directory"
    )
    ap.add_argument("--sentences", type=int, default=512, help="sentences per phase (default %(default)s)")
    ap.add_argument(
        "--single", type=int, default=128, help="sentences for the batch-1 phases (default %(default)s)"
    )
    ap.add_argument(
        "--clients", type=int, default=32, help="concurrent single-sentence clients (default %(default)s)"
    )
    ap.add_argument("--no-st", action="store_true", help="skip sentence-transformers")
    args = ap.parse_args()

    from maas.store.locate import resolve

    model_dir = resolve(args.model)[1]
    texts = sentences(args.sentences)
    sizes = [1, 32, 256]
    print(f"{len(texts)} sentences from {WIKI.name}, model {args.model} ({model_dir})", file=sys.stderr)
    st = {} if args.no_st else bench_st(texts, model_dir, sizes, args.single)
    eng = bench_engine(texts, model_dir, sizes, args.single)
    http = bench_http(args, texts, sizes)

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}x" if a and b else "-"

    print(f"\n{args.model}: sentences/s (2 decimals are noise; compare within one run)\n")
    print("| requests | sentence-transformers | maas engine | maas over HTTP | HTTP / ST |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for b in sizes:
        k = f"batch {b}"
        s = st.get(k)
        print(f"| {b} sentence(s) each | {s or 0:.1f} | {eng[k]:.1f} | {http[k]:.1f} | {ratio(http[k], s)} |")
    print(
        f"| {args.clients} concurrent clients, 1 sentence each | - | - | {http['concurrent']:.1f} | "
        f"{ratio(http['concurrent'], http['batch 1'])} of one-by-one |"
    )
    print("\nShort queries (first 6 words of each sentence), over HTTP, 1 per request:")
    print(
        f"  one by one: {http['queries one by one']:.1f}/s; {args.clients} concurrent clients: "
        f"{http['queries concurrent']:.1f}/s ({ratio(http['queries concurrent'], http['queries one by one'])})"
    )


if __name__ == "__main__":
    main()
