"""`maas info [--json]`: what this install is and what it runs on, for bug reports."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any

from maas import __version__
from maas.config import get_settings

EXTRAS = (
    "onnxruntime",
    "pyspark",
    "ray",
    "redis",
    "psycopg",
    "s3fs",
    "transformers",
    "openai",
    "tritonclient",
)
FEATURES = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
)


def add_parser(sub: Any) -> None:
    """Register `maas info`."""
    p = sub.add_parser(
        "info",
        help="versions, CPU, kernels, GPUs, MAAS_HOME and services (attach it to bug reports)",
        description="Report maas's and torch's versions, the CPU and its features, which native kernel builds "
        "exist and which run, threads, GPUs, MAAS_HOME with the registry's size and models, the extras "
        "installed, and the configured services with whether they answer.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _cpu() -> dict[str, Any]:
    from maas.kernels.native import cpu_flags

    model = platform.processor() or platform.machine()
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        model = found.group(1).strip() if found else model
    except OSError:
        pass
    return {
        "model": model,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "features": [f for f in FEATURES if f in cpu_flags()],
    }


def _torch() -> dict[str, Any]:
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "version": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "gpus": gpus,
    }


def _registry() -> dict[str, Any]:
    s = get_settings()
    home = s.home.expanduser()
    out: dict[str, Any] = {
        "home": str(home),
        "database": _redact(os.environ.get("MAAS_DATABASE_URL") or f"sqlite:///{home / 'catalog.db'}"),
        "storage": os.environ.get("MAAS_STORAGE_URL") or str(home / "blobs"),
    }
    if not home.exists() and "MAAS_DATABASE_URL" not in os.environ:
        return out | {"answers": None, "models": [], "size_bytes": 0, "note": "MAAS_HOME not created yet"}
    try:
        from maas.store.registry import Registry

        versions = Registry().list_models()
    except Exception as e:  # an unreachable database is a finding here, not a failure
        return out | {"answers": False, "error": str(e).splitlines()[0], "models": [], "size_bytes": 0}
    sizes = {(v.name, v.version): v.size for v in versions}
    return out | {
        "answers": True,
        "models": sorted({f"{v.name}:{v.tag}" for v in versions}),
        "size_bytes": sum(sizes.values()),
    }


def _redact(url: str) -> str:
    """A URL without its password."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def _extras() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in EXTRAS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _server() -> dict[str, Any]:
    import httpx

    s = get_settings()
    url = f"http://{s.host}:{s.port}"
    try:
        r = httpx.get(f"{url}/health", timeout=2.0)
        return {"url": url, "answers": True, "status": r.status_code}
    except httpx.HTTPError:
        return {"url": url, "answers": False}


def collect() -> dict[str, Any]:
    """Everything `maas info` reports."""
    from maas.cli.kernels import rows
    from maas.kernels.native import kernels_dir

    return {
        "maas": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "torch": _torch(),
        "cpu": _cpu(),
        "kernels": {"dir": str(kernels_dir()), "builds": rows()},
        "threads_setting": get_settings().threads,
        "registry": _registry(),
        "extras": _extras(),
        "server": _server(),
    }


def _text(i: dict[str, Any]) -> str:
    from maas.cli.kernels import table_lines
    from maas.cli.models import _size

    t, c, r = i["torch"], i["cpu"], i["registry"]
    lines = [
        f"maas       {i['maas']} (python {i['python']}, {i['executable']})",
        f"torch      {t['version']}" + (f" (CUDA {t['cuda']})" if t["cuda"] else " (CPU build)"),
        f"platform   {i['platform']}",
        f"cpu        {c['model']}: {c['usable_cores']} of {c['cores']} cores; {' '.join(c['features']) or '-'}",
        f"threads    {t['threads']} (MAAS_THREADS={i['threads_setting'] or 'auto'})",
        f"gpus       {', '.join(t['gpus']) or 'none'}",
        f"kernels    {i['kernels']['dir']}",
    ]
    lines += table_lines(i["kernels"]["builds"])
    answers = {True: "answers", False: f"does not answer ({r.get('error', '')})", None: r.get("note", "")}
    lines += [
        f"MAAS_HOME  {r['home']}",
        f"  catalog  {r['database']}: {answers[r['answers']]}",
        f"  blobs    {r['storage']}",
        f"  models   {len(r['models'])}, {_size(r['size_bytes'])}" + (": " if r["models"] else "")
        + ", ".join(r["models"]),
        "extras     " + ", ".join(f"{k} {v or '-'}" for k, v in i["extras"].items()),
        f"server     {i['server']['url']}: " + ("answers" if i["server"]["answers"] else "not running"),
    ]  # fmt: skip
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the report."""
    info = collect()
    print(json.dumps(info, indent=2) if args.json else _text(info))
    return 0
