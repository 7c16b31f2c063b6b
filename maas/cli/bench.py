"""`maas bench URL`: load-test any OpenAI-compatible server (ours, vLLM, llama.cpp's)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    """Register the verb."""
    p = sub.add_parser(
        "bench",
        help="load-test an OpenAI-compatible server",
        description="Send streaming /v1/completions requests to URL and report throughput, TTFT, "
        "inter-token and end-to-end latency (p50/p90/p99) and errors by kind; write JSON and a PNG.",
    )
    p.add_argument("url", help="base URL of the API, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", default=None, help="model name (default: the server's first)")
    load = p.add_mutually_exclusive_group()
    load.add_argument(
        "--request-rate", type=float, default=None, help="Poisson arrivals per second (open loop)"
    )
    p.add_argument("--concurrency", type=int, default=None,
                   help="clients in a closed loop (default 8); with --request-rate: at most this many in flight")  # fmt: skip
    p.add_argument("--prompts", default=None, help="prompt file: JSONL with a prompt field, or one per line")
    p.add_argument(
        "--input-len", type=int, default=128, help="synthetic prompt length in tokens (default %(default)s)"
    )
    p.add_argument("--output-len", type=int, default=64, help="tokens to generate (default %(default)s)")
    p.add_argument(
        "--num-prompts",
        type=int,
        default=None,
        help="requests to send (default 100, or unlimited with --duration)",
    )
    p.add_argument("--duration", type=float, default=None, help="seconds to run")
    p.add_argument("--api-key", default=None, help="Bearer key")
    p.add_argument(
        "--timeout", type=float, default=600, help="per-request timeout in seconds (default %(default)s)"
    )
    p.add_argument("--unreachable-after", type=float, default=5.0, metavar="SECONDS",
                   help="end the run early when no connection to the server has worked for this long; failed "
                   "connections are tried again with backoff meanwhile (default %(default)s)")  # fmt: skip
    p.add_argument("--json", default="bench.json", help="report file (default %(default)s)")
    p.add_argument("--plot", default="bench.png", help="plot file; '' for none (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed for synthetic prompts and arrivals")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the load, print and save the report; exit 1 when the server was unreachable."""
    import logging

    import httpx
    from tqdm import tqdm

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the report

    from maas.bench.loadgen import LoadSpec, Reach, read_prompts, run_load, summarize, synthetic_prompts
    from maas.bench.report import plot, table, write_json
    from maas.errors import InvalidRequestError

    for name in ("concurrency", "num_prompts", "input_len", "output_len"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise InvalidRequestError(f"--{name.replace('_', '-')} must be at least 1")
    if args.unreachable_after <= 0:
        raise InvalidRequestError("--unreachable-after must be more than 0 seconds")
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    model = args.model
    if model is None:
        try:
            data = httpx.get(args.url.rstrip("/") + "/models", headers=headers, timeout=30).json()["data"]
            model = data[0]["id"]
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise InvalidRequestError(
                f"server unreachable at {args.url}: cannot list its models ({e}); is it running? "
                "(else pass --model)"
            ) from None
        except (httpx.HTTPError, ValueError, KeyError, IndexError) as e:
            raise InvalidRequestError(f"cannot list the models at {args.url} ({e}); pass --model") from None
    num = args.num_prompts or (None if args.duration else 100)
    prompts: list[str | list[int]] = (
        read_prompts(args.prompts)
        if args.prompts
        else list(synthetic_prompts(num or 1000, args.input_len, args.seed))
    )
    if not prompts:
        raise InvalidRequestError(f"no prompts in {args.prompts}")
    spec = LoadSpec(
        url=args.url, model=model, prompts=prompts, output_len=args.output_len,
        concurrency=args.concurrency or (None if args.request_rate else 8), request_rate=args.request_rate,
        num_prompts=num, duration=args.duration, api_key=args.api_key, timeout=args.timeout, seed=args.seed,
        unreachable_s=args.unreachable_after,
    )  # fmt: skip
    mode = f"{args.request_rate} req/s" if args.request_rate else f"concurrency {spec.concurrency}"
    print(f"benchmarking {model} at {args.url}: {mode}, output {args.output_len} tokens", file=sys.stderr)
    bar = tqdm(total=num, unit="req", disable=not sys.stderr.isatty(), desc="requests")
    reach = Reach(args.url, args.unreachable_after)
    records, wall = asyncio.run(run_load(spec, on_done=lambda r: bar.update(1), reach=reach))
    bar.close()
    summary = summarize(records, wall, reach.unreachable)
    print(table(summary))
    config = {k: v for k, v in vars(args).items() if k not in ("func", "api_key")} | {"model": model}
    write_json(args.json, summary, records, config)
    plotted = bool(args.plot and summary["completed"])  # nothing completed: nothing to draw
    if plotted:
        plot(args.plot, summary, records, f"{model} @ {args.url} ({mode})")
    print(f"wrote {args.json}" + (f" and {args.plot}" if plotted else ""), file=sys.stderr)
    if reach.unreachable:
        print(f"maas bench: {reach.unreachable}", file=sys.stderr)
        return 1
    return 0
