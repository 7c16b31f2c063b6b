"""The native prefill attention (csrc/prefill_attention.cpp) against PyTorch's (maas.engine.llm.attention):
chunks that start at 0 or later in their slot, several chunks in one call, grouped query heads, sliding
windows shorter and longer than a chunk, float32 and float16 caches, one-query chunks and blocks that do not
fill; bad arguments are refused."""

from __future__ import annotations

import pytest
import torch

from maas.engine.llm.attention import PrefillChunk, prefill_attention
from maas.kernels import blocks

ext = blocks.native()
pytestmark = pytest.mark.skipif(
    ext is None or not getattr(ext, "has_blas", False), reason="no native kernels (compiler) or no BLAS"
)

CASES = {  # heads, key heads, head_dim, chunks (offset, n, start, slot), window
    "one-chunk-from-0": (4, 1, 256, [(0, 256, 0, 0)], None),
    "second-chunk": (4, 1, 64, [(0, 200, 300, 1)], None),
    "mixed-chunks-gqa-window": (4, 2, 64, [(0, 37, 5, 0), (37, 1, 100, 2), (38, 70, 0, 1)], 16),
    "window-longer-than-chunk": (6, 3, 16, [(0, 33, 0, 0), (33, 45, 40, 2)], 60),
    "multi-head-one-query": (2, 2, 8, [(0, 1, 0, 0), (1, 1, 9, 1)], None),
}


def run_both(case: str, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    H, KV, hd, table, window = CASES[case]
    g = torch.Generator().manual_seed(seed)
    chunks = [PrefillChunk(*c) for c in table]
    T = sum(c.n for c in chunks)
    kc = torch.randn(3, KV, 520, hd, generator=g).to(dtype)
    vc = torch.randn(3, KV, 520, hd, generator=g).to(dtype)
    q = torch.randn(T, H, hd, generator=g) * 2
    want, got = torch.full((T, H, hd), float("nan")), torch.full((T, H, hd), float("nan"))
    prefill_attention(q, kc, vc, chunks, window, want)
    ext.prefill_attention(q, kc, vc, torch.tensor(table, dtype=torch.long), window or 0, got)
    return want, got


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("case", list(CASES))
def test_native_prefill_attention_matches_pytorchs(case, dtype):
    want, got = run_both(case, dtype)
    assert torch.isfinite(got).all()  # every row written
    assert (want - got).abs().max().item() < 2e-6


def test_the_same_call_gives_the_same_bits():
    a = run_both("mixed-chunks-gqa-window", torch.float16, seed=3)[1]
    b = run_both("mixed-chunks-gqa-window", torch.float16, seed=3)[1]
    assert torch.equal(a, b)


def test_bad_arguments_are_refused():
    q, kc = torch.zeros(4, 2, 8), torch.zeros(1, 1, 16, 8)
    with pytest.raises(RuntimeError, match="outside"):  # positions past the cache's length
        ext.prefill_attention(q, kc, kc, torch.tensor([[0, 4, 14, 0]]), 0, torch.empty(4, 2, 8))
    with pytest.raises(RuntimeError, match="outside"):  # rows past q
        ext.prefill_attention(q, kc, kc, torch.tensor([[2, 4, 0, 0]]), 0, torch.empty(4, 2, 8))
    with pytest.raises(RuntimeError, match="float32"):
        ext.prefill_attention(q.double(), kc, kc, torch.tensor([[0, 4, 0, 0]]), 0, torch.empty(4, 2, 8))
