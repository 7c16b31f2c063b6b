"""Print, save (JSON) and plot (PNG) a load run."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from maas.bench.loadgen import Record


def table(summary: dict[str, Any]) -> str:
    """A readable report."""
    lines = [
        f"requests          {summary['completed']}/{summary['requests']} completed in {summary['duration_s']:.1f} s",
        f"throughput        {summary['request_throughput']:.2f} req/s, "
        f"{summary['output_token_throughput']:.1f} output tok/s",
        f"errors            {summary['errors'] or 'none'}",
        "latency (ms)      mean      p50      p90      p99",
    ]
    for key, label in (("ttft_ms", "TTFT"), ("itl_ms", "inter-token"), ("e2e_ms", "end-to-end")):
        p = summary[key]
        vals = "".join(
            f"{v:9.1f}" if v is not None else "        -" for v in (p["mean"], p["p50"], p["p90"], p["p99"])
        )
        lines.append(f"  {label:<15}{vals}")
    if summary.get("connect_retries"):
        lines.append(f"connections       {summary['connect_retries']} failed and tried again (backing off)")
    if summary.get("unreachable"):
        lines.insert(0, f"{summary['unreachable']}: the run ended early")
    return "\n".join(lines)


def write_json(
    path: str | Path, summary: dict[str, Any], records: list[Record], config: dict[str, Any]
) -> None:
    """Summary, the run's configuration and every request's record."""
    data = {
        "config": config,
        "summary": summary,
        "requests": [{k: v for k, v in asdict(r).items() if k != "token_times"} for r in records],
    }
    Path(path).write_text(json.dumps(data, indent=2))


def plot(path: str | Path, summary: dict[str, Any], records: list[Record], title: str) -> None:
    """Latency percentiles (bars) and output tokens/s over time (1 s buckets)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [("ttft_ms", "TTFT"), ("itl_ms", "inter-token"), ("e2e_ms", "end-to-end")]
    qs = ["p50", "p90", "p99"]
    width = 0.25
    for i, q in enumerate(qs):
        vals = [summary[k][q] or 0.0 for k, _ in names]
        ax1.bar([x + i * width for x in range(len(names))], vals, width, label=q)
    ax1.set_xticks([x + width for x in range(len(names))], [n for _, n in names])
    ax1.set_yscale("log")
    ax1.set_ylabel("ms (log scale)")
    ax1.set_title("latency percentiles")
    ax1.legend()
    end = max((r.end or r.start for r in records), default=0.0)
    buckets = [0] * (int(end) + 1)
    for r in records:
        if r.ok:
            for t in r.token_times:
                buckets[int(t)] += max(1, round(r.output_tokens / max(1, len(r.token_times))))
    ax2.plot(range(len(buckets)), buckets)
    ax2.set_xlabel("seconds since start")
    ax2.set_ylabel("output tokens/s")
    ax2.set_title("throughput over time")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
