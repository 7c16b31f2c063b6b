"""Linear layers alone, with all-MiniLM-L6-v2's 24 weight shapes: MKL float32 (nn.Linear) next to
the pre-packed small-batch paths of maas/kernels/small_batch_linear.py, for a range of row counts.

    python benchmarks/small_batch_linear.py

Prints ms per pass over the 24 layers (distinct weights, so they do not all stay in cache), best
of three, and each path's largest error against nn.Linear.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from maas.kernels.small_batch_linear import SMALL_MODES, SmallBatchLinear, available

SHAPES = [(384, 1152), (384, 384), (384, 1536), (1536, 384)] * 6  # (in, out) of the fused QKV, out, FFN


def per_pass(layers: list[nn.Module], rows: int) -> float:
    xs = {n: torch.randn(rows, n) for n in (384, 1536)}
    reps = max(4, 2000 // rows)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(3):
            for lin, (n_in, _) in zip(layers, SHAPES, strict=True):
                lin(xs[n_in])
            t = time.perf_counter()
            for _ in range(reps):
                for lin, (n_in, _) in zip(layers, SHAPES, strict=True):
                    lin(xs[n_in])
            best = min(best, (time.perf_counter() - t) / reps * 1000)
    return best


def main() -> None:
    torch.manual_seed(0)
    base = [nn.Linear(i, o) for i, o in SHAPES]
    paths: dict[str, list[nn.Module]] = {"MKL float32": list(base)}
    for mode in SMALL_MODES:
        if available(mode):
            paths[f"packed {mode}"] = [SmallBatchLinear(lin, mode, max_rows=1 << 30) for lin in base]
    print(f"{torch.get_num_threads()} threads; ms per pass over 24 linear layers\n")
    print("| rows | " + " | ".join(paths) + " |")
    print("| ---: |" + " ---: |" * len(paths))
    for rows in (1, 3, 10, 34, 64, 128, 256, 512, 1088):
        print(f"| {rows} | " + " | ".join(f"{per_pass(ls, rows):.2f}" for ls in paths.values()) + " |")
    x = torch.randn(34, 384)
    with torch.inference_mode():
        for name, ls in paths.items():
            err = (ls[0](x) - base[0](x)).abs().max().item()
            print(f"{name}: max |error| vs nn.Linear at 34 rows {err:.2e}")


if __name__ == "__main__":
    main()
