"""The KV cache commits memory as positions are written and gives a slot's memory back when its sequence
leaves."""

from __future__ import annotations

import psutil
import torch

from maas.engine.llm.attention import KVCache

MiB = 2**20


def rss() -> float:
    return psutil.Process().memory_info().rss / MiB


def test_memory_is_committed_as_written_and_given_back_per_slot():
    before = rss()
    cache = KVCache(num_layers=2, num_slots=4, max_len=8192, n_kv=2, head_dim=64, dtype=torch.float32,
                    device=torch.device("cpu"))  # fmt: skip
    per_slot = 2 * 8192 * 64 * 4 / MiB  # 4 MiB per slot per tensor, 16 MiB per slot over the 4 tensors
    assert rss() - before < per_slot  # reserved (64 MiB), not committed
    for t in cache.k + cache.v:
        t[1, :, :16] = 1.0  # one sequence, 16 positions: a few pages, not the slot
    assert rss() - before < per_slot
    for t in cache.k + cache.v:
        t[1:3] = 2.0  # two whole slots
    full = rss()
    assert full - before > 1.5 * 4 * per_slot
    cache.release([1])
    assert full - rss() > 0.9 * 4 * per_slot  # slot 1's 16 MiB went back
    for t in cache.k + cache.v:
        assert not t[1].any()  # it reads as zeros
        assert (t[2] == 2.0).all() and not t[0].any() and not t[3].any()  # its neighbours are untouched
