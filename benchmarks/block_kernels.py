"""The GGUF block kernels (maas/kernels/blocks.py) on a model's layer shapes, next to the 8-bit q8 kernel
and PyTorch's float32 matmul on the same (dequantized) weights, and the machine's memory bandwidth.

    python benchmarks/block_kernels.py                       # SmolLM2-135M's shapes, Q4_1 (its file's format)
    python benchmarks/block_kernels.py --formats Q4_K,Q6_K,Q5_0,Q8_0 --shapes 1024x640,2048x640,640x2048
    python benchmarks/block_kernels.py --integer --formats Q5_0,Q4_K,Q6_K --shapes 4096x640,640x2048 --rows 1,32,256

Prints milliseconds per call at 1, 32 and 512 rows, for one row the weight bytes read per second (the
block kernel reads the file's bytes; q8 reads 1.06 bytes a weight, float32 4) and for more the multiply-adds
per second. `--integer`: the block layers repacked for the integer kernel (16-bit activations, where the CPU
has AVX-512 VNNI), as `maas serve` runs them by default there.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from maas.kernels.blocks import FORMATS, BlockLinear, dequantize, integer_kernel, pack  # noqa: E402
from maas.kernels.q8_linear import Q8Linear  # noqa: E402


def random_blocks(fmt: str, n: int, k: int) -> torch.Tensor:
    f = FORMATS[fmt]
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(n * (k // f.qk), f.nbytes), dtype=np.uint8)
    off = 208 if fmt == "Q6_K" else 0
    for o in [off] + ([2] if fmt in ("Q4_1", "Q5_1", "Q4_K", "Q5_K") else []):
        raw[:, o : o + 2] = (
            (rng.standard_normal(len(raw)) * 0.01).astype(np.float16).view(np.uint8).reshape(-1, 2)
        )
    return torch.from_numpy(raw.reshape(n, f.row_bytes(k)))


def per_call(f, x: torch.Tensor, seconds: float = 0.3) -> float:
    f(x)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        f(x)
        n += 1
    return (time.perf_counter() - t0) / n


def bandwidth() -> float:
    """GB/s of a large copy (read + write counted), best of 5."""
    a = torch.empty(64 * 2**20, dtype=torch.float32).fill_(1.0)
    b = torch.empty_like(a)
    best = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        b.copy_(a)
        best = max(best, 2 * a.numel() * 4 / (time.perf_counter() - t0) / 1e9)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--formats", default="Q4_1")
    p.add_argument("--shapes", default="576x576,1536x576,576x1536,49152x576", help="NxK (outputs x inputs)")
    p.add_argument("--rows", default="1,32,512")
    p.add_argument("--integer", action="store_true", help="the integer kernel (needs AVX-512 VNNI)")
    args = p.parse_args()
    if args.integer and integer_kernel() is None:
        sys.exit("no integer kernel on this CPU (AVX-512 VNNI) or no compiler")
    bw = bandwidth()
    print(f"memory bandwidth (large copy, read + write): {bw:.1f} GB/s; threads {torch.get_num_threads()}")
    head = ["format", "N x K", "rows", "block ms", "GB/s | GMAC/s", "q8 ms", "fp32 ms", "block / q8"]
    print(" | ".join(f"{h:>11}" for h in head))
    for fmt in args.formats.split(","):
        for shape in args.shapes.split(","):
            n, k = map(int, shape.split("x"))
            raw = random_blocks(fmt, n, k)
            block = BlockLinear(raw, fmt, k)
            if args.integer:
                pack(block, integer=True)
            lin = torch.nn.Linear(k, n, bias=False)
            lin.weight.data = dequantize(raw, fmt, k)
            q8 = Q8Linear(lin)
            for m in map(int, args.rows.split(",")):
                if n * m > 2**22:
                    continue
                x = torch.randn(m, k)
                with torch.inference_mode():
                    tb, tq, tf = per_call(block, x), per_call(q8, x), per_call(lin, x)
                gbs = f"{raw.numel() / tb / 1e9:.1f}" if m == 1 else f"{m * n * k / tb / 1e9:.0f}"
                cells = [
                    fmt,
                    shape,
                    m,
                    f"{tb * 1e3:.3f}",
                    gbs,
                    f"{tq * 1e3:.3f}",
                    f"{tf * 1e3:.3f}",
                    f"{tb / tq:.2f}x",
                ]
                print(" | ".join(f"{c!s:>11}" for c in cells))


if __name__ == "__main__":
    main()
