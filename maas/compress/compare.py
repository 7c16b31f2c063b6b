"""`maas compare`: versions side by side: size, parameters, quality, speed, peak memory; a table,
JSON and a PNG chart of quality against size.

    rows = compare(["smollm2-135m-instruct", "smollm2-135m-instruct:int8-g32"])
    print(table(rows)); chart(rows, "compare.png")

Quality is what `maas eval` recorded on each version (run it first); speed and peak RSS are measured
here, each model in its own process (python -m maas.compress.measure) so that memory is its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from maas.errors import InvalidRequestError, MaasError
from maas.formats.detect import model_format
from maas.kernels.quantized import QuantLinear, parameter_count
from maas.store.locate import local_path, locate

QUALITY = (("perplexity", "lower"), ("accuracy", "higher"), ("cosine", "higher"))


@dataclass
class Row:
    """One version's figures."""

    model: str
    kind: str
    operation: str
    size_bytes: int
    params_total: int
    params_nonzero: int
    quality: dict[str, Any] = field(default_factory=dict)  # {"metric": name, "value": v, ...} or {}
    speed: dict[str, float] = field(default_factory=dict)
    peak_rss_bytes: int = 0


def parameters(model: nn.Module) -> tuple[int, int]:
    """(total, non-zero) weights; quantized layers count the weights their codes stand for."""
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    nonzero += sum(
        int(torch.count_nonzero(m.weight())) for m in model.modules() if isinstance(m, QuantLinear)
    )
    return parameter_count(model), nonzero


def onnx_parameters(path: Path) -> tuple[int, int]:
    """(total, non-zero) weights of an ONNX graph's initializers (a quantized graph's scales and zero points
    are not weights)."""
    import onnx
    from onnx import numpy_helper

    from maas.formats.onnx import onnx_file

    total = nonzero = 0
    for t in onnx.load(str(onnx_file(path))).graph.initializer:
        if t.name.endswith(("_scale", "_zero_point")):
            continue
        a = numpy_helper.to_array(t)
        total, nonzero = total + a.size, nonzero + int((a != 0).sum())
    return total, nonzero


def _load(path: Path, kind: str) -> nn.Module:
    if kind == "llm":
        from maas.engine.llm.loader import load_lm

        return load_lm(path, "cpu", "float32").model
    if kind == "embedding":
        from maas.engine.embedding.embedder import Embedder

        return Embedder(path, weights="float32").model
    from maas.models.exported import load_exported

    return load_exported(path)


def _quality(metrics: dict[str, Any]) -> dict[str, Any]:
    """The first quality measure `maas eval` recorded in a version's metrics ({} when none)."""
    ev = metrics.get("eval") or {}
    for metric, better in QUALITY:
        if metric in ev:
            return {"metric": metric, "value": ev[metric], "better": better, "data": ev.get("data")}
    return {}


def _measure(path: Path, kind: str, streams: list[int], tokens: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "maas.compress.measure", str(path), kind,
           "--streams", ",".join(map(str, streams)), "--tokens", str(tokens)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "MAAS_LOG_LEVEL": "WARNING"})
    if r.returncode != 0:
        raise MaasError(f"measuring {path} failed: {r.stderr.strip().splitlines()[-1:]}")
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def compare(
    names: list[str], streams: list[int] | None = None, tokens: int = 32, speed: bool = True
) -> list[Row]:
    """Figures for every model in `names` (registry refs, built-in names or paths), in that order."""
    if not names:
        raise InvalidRequestError("name at least one model to compare")
    from maas.store.builtin import ensure_builtins_imported

    ensure_builtins_imported()
    streams = streams or [1, 16]
    from maas.store.registry import Registry

    registry = Registry()
    found = [locate(n) for n in names]
    kinds = {f.kind for f in found}
    if len(kinds) > 1:
        raise InvalidRequestError(f"compare models of one kind (got {', '.join(sorted(kinds))})")
    rows = []
    for name, f in tqdm(list(zip(names, found, strict=True)), desc="comparing", unit="model",
                        disable=not sys.stderr.isatty()):  # fmt: skip
        path = local_path(f)
        onnx_graph = f.kind == "tensor" and model_format(path) == "onnx"
        total, nonzero = onnx_parameters(path) if onnx_graph else parameters(_load(path, f.kind))
        op, quality = "-", {}
        if f.origin == "registry":
            info = registry.show(f.source)  # one lookup: operation and recorded quality
            op, quality = info.operation, _quality(info.metrics)
        row = Row(name, f.kind, op, f.size, total, nonzero, quality)
        if speed:
            m = _measure(path, f.kind, streams, tokens)
            row.speed, row.peak_rss_bytes = m["speed"], m["peak_rss_bytes"]
        rows.append(row)
    return rows


def as_json(rows: list[Row]) -> str:
    """The rows as a JSON list."""
    return json.dumps([asdict(r) for r in rows], indent=2)


def _speed_label(key: str) -> str:
    what, _, n = key.rpartition("_")
    unit = {"decode_tok_s": "tok/s", "sentences_s": "sent/s", "examples_s": "ex/s"}.get(what, what)
    return f"{unit} @{n}"


def _count(n: float) -> str:
    """134.5M, 13.7k, 512."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def _bytes(n: float) -> str:
    """516.5 MiB, 60.2 KiB."""
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def table(rows: list[Row]) -> str:
    """A fixed-width table for the terminal."""
    speed_keys = list(rows[0].speed) if rows and rows[0].speed else []
    head = [
        "model",
        "operation",
        "size",
        "params",
        "non-zero",
        "quality",
        *map(_speed_label, speed_keys),
    ]
    if any(r.peak_rss_bytes for r in rows):
        head.append("peak RSS")
    lines = []
    for r in rows:
        q = f"{r.quality['metric']} {r.quality['value']:.4g}" if r.quality else "- (run maas eval)"
        cells = [r.model, r.operation, _bytes(r.size_bytes), _count(r.params_total), _count(r.params_nonzero), q,
                 *(f"{r.speed.get(k, 0):.1f}" for k in speed_keys)]  # fmt: skip
        if r.peak_rss_bytes:
            cells.append(_bytes(r.peak_rss_bytes))
        lines.append(cells)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, lines)])


def chart(rows: list[Row], path: str | Path) -> Path:
    """A PNG: quality against size on disk, one labelled point per version."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if r.quality]
    if not scored:
        raise InvalidRequestError("no model has a recorded quality to chart: run `maas eval` on them first")
    metric, better = scored[0].quality["metric"], scored[0].quality["better"]
    one_name = len({r.model.partition(":")[0] for r in scored}) == 1  # label by tag alone then
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for i, r in enumerate(scored):
        x, y = r.size_bytes / 2**20, r.quality["value"]
        label = (r.model.partition(":")[2] or "latest") if one_name else r.model
        ax.scatter([x], [y], s=40)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 8 if i % 2 else -12), fontsize=8)
    if one_name:
        fig.suptitle(scored[0].model.partition(":")[0], fontsize=9)
    ax.margins(x=0.2, y=0.15)
    if metric == "perplexity":
        ax.set_yscale("log")  # one broken version should not flatten the others
    ax.set_xlabel("size on disk (MiB)")
    ax.set_ylabel(f"{metric} ({better} is better)")
    ax.set_title("quality against size")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out
