import pytest
import torch

from maas.engine.llm.sampler import SampleRow, sample
from maas.engine.llm.sampling_params import SamplingParams
from maas.errors import InvalidRequestError


def row(gen=None, out=(), prompt=(), **kw) -> SampleRow:
    return SampleRow(SamplingParams(**kw), list(prompt), list(out), gen)


def logits(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_greedy_and_top_k_1_pick_the_argmax():
    lg = logits([0.1, 3.0, 0.2, 2.9], [5.0, 0.0, 0.0, 0.0])
    toks, _ = sample(lg, [row(temperature=0), row(temperature=1.0, top_k=1)])
    assert toks == [1, 0]


def test_top_p_keeps_only_the_nucleus():
    lg = logits([10.0, 9.0, 0.0, 0.0])  # p ~ [0.73, 0.27, ~0, ~0]
    g = torch.Generator().manual_seed(0)
    seen = {sample(lg, [row(g, temperature=1.0, top_p=0.5)])[0][0] for _ in range(50)}
    assert seen == {0}
    seen = {sample(lg, [row(g, temperature=1.0, top_p=0.99)])[0][0] for _ in range(200)}
    assert seen == {0, 1}


def test_min_p_drops_unlikely_tokens():
    lg = logits([2.0, 1.9, -5.0, -5.0])
    g = torch.Generator().manual_seed(1)
    seen = {sample(lg, [row(g, temperature=1.0, min_p=0.1)])[0][0] for _ in range(200)}
    assert seen == {0, 1}


def test_same_seed_same_tokens_different_seed_differs():
    lg = torch.zeros(1, 1000)
    a = [sample(lg, [row(torch.Generator().manual_seed(7))])[0][0] for _ in range(5)]
    b = [sample(lg, [row(torch.Generator().manual_seed(7))])[0][0] for _ in range(5)]
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(8)
    s1 = [sample(lg, [row(g1)])[0][0] for _ in range(20)]
    s2 = [sample(lg, [row(g2)])[0][0] for _ in range(20)]
    assert a == b and s1 != s2


def test_penalties_steer_away_from_repeats():
    lg = logits([2.0, 1.9, 0.0])
    assert sample(lg, [row(temperature=0, out=[0], presence_penalty=1.0)])[0] == [1]
    assert sample(lg, [row(temperature=0, out=[0, 0], frequency_penalty=0.1)])[0] == [1]
    assert sample(lg, [row(temperature=0, prompt=[0], repetition_penalty=1.2)])[0] == [1]
    assert sample(lg, [row(temperature=0, out=[0])])[0] == [0]


def test_logprobs_are_normalised_and_top_sorted():
    lg = logits([1.0, 2.0, 3.0, 0.0])
    _, lps = sample(lg, [row(temperature=0, logprobs=2)])
    lp = lps[0]
    assert lp is not None and lp.token_id == 2
    ref = torch.log_softmax(lg[0], -1)
    assert lp.logprob == pytest.approx(float(ref[2]))
    assert [t for t, _ in lp.top] == [2, 1]


@pytest.mark.parametrize(
    "kw",
    [
        {"max_tokens": 0},
        {"top_p": 1.5},
        {"top_p": 0.0},
        {"temperature": -1},
        {"n": 0},
        {"logprobs": 50},
        {"stop": ("",)},
    ],
)
def test_nonsense_parameters_are_refused(kw):
    with pytest.raises(InvalidRequestError):
        SamplingParams(**kw)


def reference_support(
    lg: torch.Tensor, temperature: float, top_k: int, top_p: float, min_p: float
) -> set[int]:
    """The tokens a full sort keeps: rank < top_k, mass strictly before < top_p, p >= min_p * max."""
    p = (lg / temperature).softmax(-1)
    order = p.argsort(descending=True).tolist()
    kept, before = set(), 0.0
    for rank, t in enumerate(order):
        if (top_k > 0 and rank >= top_k) or (rank > 0 and before >= top_p) or p[t] < min_p * p.max():
            break
        kept.add(t)
        before += float(p[t])
    return kept


@pytest.mark.parametrize(
    ("top_k", "top_p", "min_p", "scale"),
    [(0, 0.9, 0.0, 1.0), (0, 0.9, 0.0, 0.05), (5, 1.0, 0.0, 1.0), (0, 1.0, 0.1, 1.0), (8, 0.8, 0.02, 2.0)],
)
def test_filters_keep_exactly_what_a_full_sort_keeps(top_k, top_p, min_p, scale):
    """scale 0.05: a flat distribution whose nucleus is wider than the first guess of candidates."""
    torch.manual_seed(3)
    lg = torch.randn(1, 3000) * scale * 4
    want = reference_support(lg[0], 0.9, top_k, top_p, min_p)
    g = torch.Generator().manual_seed(5)
    r = row(g, temperature=0.9, top_k=top_k, top_p=top_p, min_p=min_p)
    seen = {sample(lg, [r])[0][0] for _ in range(400 if len(want) < 40 else 60)}
    assert seen <= want
    if len(want) < 40:
        assert len(seen) >= len(want) // 2  # the draws do spread over the survivors


def test_a_row_draws_the_same_alone_or_next_to_other_rows():
    torch.manual_seed(4)
    lg = torch.randn(3, 500) * 3
    kw = {"temperature": 0.8, "top_p": 0.9}
    alone = [sample(lg[1:2], [row(torch.Generator().manual_seed(9), **kw)])[0][0] for _ in range(1)]
    rows = [row(torch.Generator().manual_seed(1), temperature=1.0, top_k=3),
            row(torch.Generator().manual_seed(9), **kw), row(temperature=0)]  # fmt: skip
    assert sample(lg, rows)[0][1] == alone[0]
