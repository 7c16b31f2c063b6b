"""The parameter server's update rules, without RPC: sharding, sync averaging, bounded staleness."""

from __future__ import annotations

import torch

from maas.models.zoo import build
from maas.train.config import parse_config
from maas.train.param_server import Shard, plan


def _cfg(mode: str, staleness: int = 1):
    return parse_config(
        f"name: p\ntrain: {{steps: 1}}\noptim: {{name: sgd, lr: 1.0, momentum: 0.0}}\n"
        f"distributed: {{strategy: ps, mode: {mode}, staleness: {staleness}}}"
    )


def test_plan_balances_parameters_across_servers() -> None:
    m = build("mlp", {"hidden": [64, 64]}, input_shape=(64,), num_classes=10)
    shards = plan(m, 2)
    sizes = dict((n, p.numel()) for n, p in m.named_parameters())
    assert sorted(n for s in shards for n in s) == sorted(sizes)
    loads = [sum(sizes[n] for n in s) for s in shards]
    assert max(loads) - min(loads) <= max(sizes.values())


def test_sync_waits_for_every_worker_and_applies_the_mean() -> None:
    shard = Shard({"w": torch.zeros(2)}, _cfg("sync"), workers=2)
    f0 = shard.push(0, 0, [torch.tensor([1.0, 2.0])], lr=1.0)
    assert not f0.done()  # the other worker has not pushed this step yet
    f1 = shard.push(1, 0, [torch.tensor([3.0, 4.0])], lr=1.0)
    assert f0.done() and f1.done()
    assert torch.equal(f0.wait()[0], torch.tensor([-2.0, -3.0]))  # 0 - lr * mean
    assert shard.updates == 1


def test_async_applies_at_once_and_bounds_staleness() -> None:
    shard = Shard({"w": torch.zeros(1)}, _cfg("async", staleness=1), workers=2)
    assert shard.push(0, 0, [torch.ones(1)], lr=1.0).done()  # 1 step ahead of worker 1: allowed
    parked = shard.push(0, 1, [torch.ones(1)], lr=1.0)
    assert not parked.done() and shard.updates == 2  # applied, but the fast worker must wait
    assert shard.push(1, 0, [torch.ones(1)], lr=1.0).done()
    assert parked.done() and torch.equal(parked.wait()[0], torch.tensor([-3.0]))
