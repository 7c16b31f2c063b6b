"""Prefill attention: the native kernel (maas/kernels/csrc/prefill_attention.cpp) next to PyTorch's SDPA path
(maas.engine.llm.attention.prefill_attention) on a model's head shapes, for a 512-token prompt's two chunks of
256 (the first from position 0, the second after it) over a float16 cache, and their largest difference.

    python benchmarks/prefill_attention.py                  # Gemma 3 270M's heads (4 query heads, 1 key head, 256)
    python benchmarks/prefill_attention.py --heads 9,3,64   # SmolLM2-135M's
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from maas.engine.llm.attention import PrefillChunk, prefill_attention  # noqa: E402
from maas.kernels import blocks  # noqa: E402


def per_call(f, seconds: float = 0.5) -> float:
    f()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        f()
        n += 1
    return (time.perf_counter() - t0) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--heads", default="4,1,256", help="query heads, key heads, head_dim")
    p.add_argument("--chunk", type=int, default=256, help="queries a chunk")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    H, KV, hd = (int(v) for v in args.heads.split(","))
    ext = blocks.native()
    if ext is None or not getattr(ext, "has_blas", False):
        sys.exit("no native kernel here (compiler) or no BLAS in this PyTorch")
    n = args.chunk
    g = torch.Generator().manual_seed(0)
    kc = torch.randn(1, KV, 2 * n, hd, generator=g).half()
    vc = torch.randn(1, KV, 2 * n, hd, generator=g).half()
    q = torch.randn(n, H, hd, generator=g)
    print(f"heads {H}, key heads {KV}, head_dim {hd}, chunks of {n}, float16 cache; ms a call")
    print(f"{'chunk':>14} | {'PyTorch SDPA':>12} | {'native':>8} | {'max |diff|':>10}")
    for start in (0, n):
        chunk = [PrefillChunk(0, n, start, 0)]
        table = torch.tensor([[0, n, start, 0]])
        a, b = torch.empty_like(q), torch.empty_like(q)
        ours = partial(ext.prefill_attention, q, kc, vc, table, 0, b)
        theirs = partial(prefill_attention, q, kc, vc, chunk, None, a)
        times = [(per_call(theirs), per_call(ours)) for _ in range(args.rounds)]
        t_sdpa, t_ours = min(t for t, _ in times), min(t for _, t in times)
        diff = (a - b).abs().max().item()
        name = f"{start}..{start + n - 1}"
        print(f"{name:>14} | {t_sdpa * 1000:12.2f} | {t_ours * 1000:8.2f} | {diff:10.1e}")


if __name__ == "__main__":
    main()
