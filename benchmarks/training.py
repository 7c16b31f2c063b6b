"""Training benchmark: throughput of `maas train` on 1 and 2 processes, and the overhead of our
training loop over a bare PyTorch loop on the same model, data and optimizer, in one run.

    python benchmarks/training.py                 # LM (configs/lm-wikitext.yaml) and CNN (configs/cnn-digits.yaml)
    python benchmarks/training.py --lm-steps 40 --cnn-steps 300 --repeats 3

Throughput: `maas train CONFIG [--nproc 2]` as a user runs it (real processes, gloo all-reduce
for 2), read from the run's metrics.jsonl: tokens/s (LM) and samples/s (CNN) over the steady
steps (the first logging window is dropped as warm-up). The per-process batch stays the same, so
2 processes do twice the work per step.

Overhead: in this process, alternating runs of our Trainer and of a bare loop (index a batch,
forward, cross-entropy, backward, optimizer step) over the same steps from the same initial
weights; time per step from the first to the last logged step of ours against the same steps of
the bare loop. The best of --repeats runs of each is compared (noise only ever adds time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"lm": ROOT / "configs" / "lm-wikitext.yaml", "cnn": ROOT / "configs" / "cnn-digits.yaml"}


def throughput(config: Path, nproc: int, steps: int, log_every: int, home: str) -> float:
    """Steady tokens/s or samples/s of `maas train` on `nproc` processes."""
    out = Path(tempfile.mkdtemp(prefix="maas-bench-train-"))
    sets = [
        f"train.steps={steps}",
        f"train.log_every={log_every}",
        f"train.eval_every={steps}",
        f"train.checkpoint_every={steps}",
        f"output.dir={out}",
    ]
    cmd = [
        sys.executable,
        "-m",
        "maas.cli.main",
        "train",
        str(config),
        "--nproc",
        str(nproc),
        "--no-register",
    ]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "MAAS_HOME": home, "MAAS_AUTO_IMPORT_BUILTINS": "0"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [v for row in rows for k, v in row.items() if k.endswith("_per_s")][1:]
    return statistics.median(rates)


def overhead(config: Path, steps: int, repeats: int) -> tuple[float, float, float]:
    """(our seconds per step, bare seconds per step) best of `repeats` each, and the median of
    the paired ratios ours / bare (each pair ran back to back)."""
    from maas.train.config import load_config
    from maas.train.data import load_data
    from maas.train.distributed import DistContext
    from maas.train.optim import build_optimizer
    from maas.train.run import build_model, seed_everything
    from maas.train.trainer import Trainer

    log_every = max(1, steps // 10)
    out = Path(tempfile.mkdtemp(prefix="maas-bench-loop-"))
    cfg = load_config(
        config,
        [
            f"train.steps={steps}",
            f"train.log_every={log_every}",
            f"train.eval_every={steps * 10}",
            f"train.checkpoint_every={steps * 10}",
            f"output.dir={out}",
        ],
    )
    data = load_data(cfg)
    ours: list[float] = []
    bare: list[float] = []
    for _ in range(repeats):
        # Ours: time between the first and the last logged step (both logged right after a step).
        seed_everything(cfg.seed)
        t = Trainer(cfg, data, build_model(cfg, data), DistContext(), out)
        (out / "metrics.jsonl").unlink(missing_ok=True)
        t.fit(final_eval=False)
        rows = [r for r in t.history if "train_loss" in r]
        ours.append((rows[-1]["time"] - rows[0]["time"]) / (rows[-1]["step"] - rows[0]["step"]))

        # Bare: the same model, data order, batch and optimizer, nothing else.
        seed_everything(cfg.seed)
        model = build_model(cfg, data)
        model.train()
        opt = build_optimizer(model.parameters(), cfg.optim)
        b = cfg.train.batch_size
        g = torch.Generator().manual_seed(cfg.seed)
        order = torch.randperm(len(data.train), generator=g)
        n_batches = len(order) // b
        t0 = 0.0
        for step in range(steps):
            if step == log_every:
                t0 = time.perf_counter()
            j = order[(step % n_batches) * b : (step % n_batches + 1) * b]
            x, y = data.train.x[j], data.train.y[j]
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            loss.backward()
            if cfg.train.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
        bare.append((time.perf_counter() - t0) / (steps - log_every))
    paired = statistics.median(o / b for o, b in zip(ours, bare, strict=True))
    return min(ours), min(bare), paired


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lm-steps", type=int, default=60, help="LM steps per run (default %(default)s)")
    ap.add_argument("--cnn-steps", type=int, default=600, help="CNN steps per run (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=3, help="overhead runs of each loop (default %(default)s)")
    ap.add_argument("--skip-processes", action="store_true", help="only the loop overhead")
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="maas-bench-home-")
    steps = {"lm": args.lm_steps, "cnn": args.cnn_steps}
    unit = {"lm": "tokens/s", "cnn": "samples/s"}
    rows = []
    for name, config in CONFIGS.items():
        n = steps[name]
        print(f"{name}: {config.name}, {n} steps", file=sys.stderr)
        one = two = float("nan")
        if not args.skip_processes:
            one = throughput(config, 1, n, max(1, n // 10), home)
            two = throughput(config, 2, n, max(1, n // 10), home)
            print(f"  1 process {one:.0f} {unit[name]}, 2 processes {two:.0f}", file=sys.stderr)
        ours, bare, paired = overhead(config, n, args.repeats)
        print(f"  per step: ours {ours * 1e3:.2f} ms, bare {bare * 1e3:.2f} ms", file=sys.stderr)
        rows.append((name, unit[name], one, two, ours, bare, paired))

    print(f"\nmaas training on {os.cpu_count()} CPU cores, torch {torch.__version__}\n")
    print(
        "| model | unit | 1 process | 2 processes (DDP) | 2 / 1 | our loop ms/step | bare loop ms/step "
        "| overhead (best vs best) | overhead (median of pairs) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, u, one, two, ours, bare, paired in rows:
        print(
            f"| {name} | {u} | {one:.0f} | {two:.0f} | {two / one:.2f}x | {ours * 1e3:.2f} | {bare * 1e3:.2f} "
            f"| {(ours / bare - 1) * 100:+.1f}% | {(paired - 1) * 100:+.1f}% |"
        )


if __name__ == "__main__":
    main()
