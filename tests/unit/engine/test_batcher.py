"""The dynamic batcher: concurrent requests share runs, results go back in order, limits hold."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import torch

from maas.engine.batcher import DynamicBatcher
from maas.engine.tensor.backends import TorchBackend
from maas.engine.tensor.engine import TensorEngine, TensorOptions
from maas.errors import EngineDeadError, InvalidRequestError, OverloadedError
from maas.models.cnn import CNN
from maas.models.signature import Signature, TensorSpec, classifier_signature


class Recorder:
    """A run function that records batch sizes and can be held to let a queue build up."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, xs: list[int]) -> list[int]:
        self.gate.wait(5)
        self.batches.append(list(xs))
        return [x * 10 for x in xs]


def test_concurrent_requests_share_batches_and_get_their_own_results() -> None:
    run = Recorder()
    b = DynamicBatcher(run, name="t", max_batch_size=8, max_wait_s=0.05)

    async def main() -> list[list[int]]:
        run.gate.clear()  # the first request's batch blocks; the rest queue up behind it
        first = asyncio.ensure_future(b.submit([(0, 1)]))
        await asyncio.sleep(0.1)
        rest = [asyncio.ensure_future(b.submit([(i, 1), (i + 100, 1)])) for i in range(1, 10)]
        await asyncio.sleep(0.05)
        run.gate.set()
        return [await first, *[await r for r in rest]]

    out = asyncio.run(main())
    b.close()
    assert out[0] == [0] and out[1:] == [[i * 10, (i + 100) * 10] for i in range(1, 10)]
    assert max(len(x) for x in run.batches) == 8  # 18 queued items ran as 8 + 8 + 2
    assert len(run.batches) == 4 and b.stats_.rows == 19


def test_a_preferred_size_runs_without_waiting_and_keys_never_mix() -> None:
    run = Recorder()
    b = DynamicBatcher(run, name="t", max_batch_size=8, max_wait_s=5.0, preferred=(2,))

    async def main() -> None:
        await asyncio.wait_for(asyncio.gather(b.submit([(1, 1)], key="a"), b.submit([(2, 1)], key="a")), 2)
        run.gate.clear()
        blocker = asyncio.ensure_future(b.submit([(0, 2)], key="a"))
        await asyncio.sleep(0.05)
        both = [asyncio.ensure_future(b.submit([(i, 1)], key=k)) for i, k in ((3, "a"), (4, "b"), (5, "a"))]
        await asyncio.sleep(0.05)
        run.gate.set()
        await blocker
        await asyncio.gather(*both)

    asyncio.run(main())  # would take 5 s per batch if the preferred size did not cut the wait
    b.close()
    assert [1, 2] in run.batches and [3, 5] in run.batches and [4] in run.batches


def test_a_full_queue_is_refused_and_a_failing_batch_fails_only_its_requests() -> None:
    run = Recorder()
    b = DynamicBatcher(run, name="t", max_batch_size=1, max_wait_s=0, max_queue=2)

    async def main() -> None:
        run.gate.clear()
        held = [asyncio.ensure_future(b.submit([(0, 1)]))]
        await asyncio.sleep(0.05)  # the worker holds 0; 1 and 2 fill the queue
        held += [asyncio.ensure_future(b.submit([(i, 1)])) for i in (1, 2)]
        await asyncio.sleep(0.05)
        with pytest.raises(OverloadedError, match="limit 2"):
            await b.submit([(9, 1)])
        run.gate.set()
        assert [await h for h in held] == [[0], [10], [20]]

    asyncio.run(main())
    b.close()

    def broken(xs: list[int]) -> list[int]:
        if 13 in xs:
            raise RuntimeError("boom")
        return xs

    b2 = DynamicBatcher(broken, name="t", max_batch_size=1, max_wait_s=0)

    async def main2() -> None:
        with pytest.raises(EngineDeadError, match="RuntimeError: boom"):
            await b2.submit([(13, 1)])
        assert await b2.submit([(4, 1)]) == [4]

    asyncio.run(main2())
    b2.close()


def cnn_engine(**opts: object) -> TensorEngine:
    torch.manual_seed(0)
    model = CNN(1, (8, 8), 10, channels=[4, 8], hidden=16).eval()
    return TensorEngine(TorchBackend(model, classifier_signature((1, 8, 8), list("0123456789"))),
                        TensorOptions(**opts))  # type: ignore[arg-type]  # fmt: skip


def test_tensor_requests_are_stacked_and_split_back_exactly() -> None:
    eng = cnn_engine(max_batch_size=16, max_wait_ms=20)
    rng = np.random.default_rng(0)
    xs = [rng.random((n, 1, 8, 8), dtype=np.float32) for n in (1, 3, 2, 1, 5)]
    alone = [eng.infer_sync({"input": x})["scores"] for x in xs]

    async def main() -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(*[eng.infer({"input": x}) for x in xs])

    together = asyncio.run(main())
    eng.shutdown()
    assert eng.batcher.stats_.batches < len(xs)  # they shared forward passes
    for a, t in zip(alone, together, strict=True):
        np.testing.assert_allclose(t["scores"], a, atol=1e-6)


def test_tensor_engine_checks_inputs_against_the_signature() -> None:
    eng = cnn_engine(max_batch_size=4)

    async def infer(x: np.ndarray, outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        return await eng.infer({"input": x}, outputs)

    ok = np.zeros((1, 1, 8, 8), np.float32)
    with pytest.raises(InvalidRequestError, match=r"'input' has shape \[1, 8, 8\]"):
        asyncio.run(infer(np.zeros((1, 8, 8), np.float32)))
    with pytest.raises(InvalidRequestError, match="'input' has datatype FP64"):
        asyncio.run(infer(np.zeros((1, 1, 8, 8))))
    with pytest.raises(InvalidRequestError, match="at most 4 rows"):
        asyncio.run(infer(np.zeros((5, 1, 8, 8), np.float32)))
    nan = ok.copy()
    nan[0, 0, 3, 3] = np.nan
    with pytest.raises(InvalidRequestError, match="'input' holds NaN"):
        asyncio.run(infer(nan))
    with pytest.raises(InvalidRequestError, match="unknown output 'probs'"):
        asyncio.run(infer(ok, ["probs"]))
    with pytest.raises(InvalidRequestError, match="unknown input 'image'"):
        eng.infer_sync({"image": ok})
    assert list(asyncio.run(infer(ok, ["scores"]))) == ["scores"]
    eng.shutdown()


def test_signature_round_trips_and_checks_batch_agreement() -> None:
    sig = Signature(
        (TensorSpec("a", "FP32", (-1, 2)), TensorSpec("b", "INT64", (-1,), allow_nan=True)),
        (TensorSpec("y", "FP32", (-1, 3)),),
        ("x", "y", "z"),
        {"columns": ["p", "q"]},
    )
    assert Signature.from_dict(sig.as_dict()) == sig and sig.as_dict()["columns"] == ["p", "q"]
    with pytest.raises(InvalidRequestError, match="'b' has batch size 3, another input 2"):
        sig.check({"a": np.zeros((2, 2), np.float32), "b": np.zeros(3, np.int64)})
    with pytest.raises(InvalidRequestError, match="missing input 'b'"):
        sig.check({"a": np.zeros((2, 2), np.float32)})


def test_a_bad_request_in_a_shared_batch_fails_alone_and_a_dead_worker_fails_what_it_held() -> None:
    def picky(xs: list[int]) -> list[int]:
        if 13 in xs:
            raise RuntimeError("bad row")
        return [x + 1 for x in xs]

    b = DynamicBatcher(picky, name="t", max_batch_size=8, max_wait_s=0.05)

    async def main() -> list[object]:
        return await asyncio.gather(*[b.submit([(x, 1)]) for x in (1, 13, 2)], return_exceptions=True)

    ok1, bad, ok2 = asyncio.run(main())
    b.close()
    assert ok1 == [2] and ok2 == [3] and isinstance(bad, EngineDeadError) and "bad row" in str(bad)

    def broken_plan(items: list[object]) -> list[list[object]]:
        raise RuntimeError("planner bug")

    d = DynamicBatcher(lambda xs: xs, name="t", max_batch_size=8, plan=broken_plan)  # type: ignore[arg-type]

    async def held() -> None:
        with pytest.raises(EngineDeadError, match="planner bug"):
            await asyncio.wait_for(d.submit([(1, 1)]), 5)  # failed, not left waiting

    asyncio.run(held())
    assert not d.alive


def test_outputs_without_a_batch_axis_turn_stacking_off() -> None:
    class Summed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.sum(0)  # (4,): the batch is reduced away, though the signature says (-1, 4)

    sig = Signature((TensorSpec("x", "FP32", (-1, 4)),), (TensorSpec("y", "FP32", (-1,)),))
    eng = TensorEngine(TorchBackend(Summed(), sig), TensorOptions(max_batch_size=8, max_wait_ms=50))
    xs = [np.full((2, 4), i, np.float32) for i in range(3)]

    async def main() -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(*[eng.infer({"x": x}) for x in xs])

    outs = asyncio.run(main())
    eng.shutdown()
    for i, o in enumerate(outs):
        np.testing.assert_array_equal(o["y"], np.full(4, 2 * i, np.float32))  # each its own answer


def test_token_ids_outside_the_vocabulary_are_refused() -> None:
    sig = Signature((TensorSpec("ids", "INT64", (-1, -1)),), (TensorSpec("logits", "FP32", (-1, -1, 5)),),
                    extra={"vocab_size": 5})  # fmt: skip
    sig.check({"ids": np.array([[0, 4]])})
    with pytest.raises(InvalidRequestError, match=r"'ids' holds token ids outside the vocabulary \(0..4\)"):
        sig.check({"ids": np.array([[0, 5]])})
