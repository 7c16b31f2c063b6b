"""Sliding-window perplexity: every token scored once, equal to full-context scoring when one
window covers the text, and bad settings refused."""

from __future__ import annotations

import math

import pytest
import torch

from maas.compress.evaluate import perplexity, windows
from maas.errors import InvalidRequestError
from tests.conftest import tiny_lm


@pytest.mark.parametrize(("n", "context", "stride"), [(10, 4, 2), (10, 4, 4), (7, 16, 8), (100, 32, 5)])
def test_every_token_but_the_first_is_scored_once(n: int, context: int, stride: int) -> None:
    scored = [j for _, end, first in windows(n, context, stride) for j in range(first, end)]
    assert scored == list(range(1, n))
    assert all(end - begin <= context for begin, end, _ in windows(n, context, stride))


def test_one_window_equals_full_context_scoring() -> None:
    lm = tiny_lm()
    text = "the cat sat on the mat. " * 4
    r = perplexity(lm, text, context=256, stride=256)
    ids = torch.tensor(lm.tokenizer.encode(text))
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(ids[None])[0, :-1], -1)
    nll = -float(logp.gather(1, ids[1:, None]).mean())
    assert r.tokens == len(ids) - 1 and math.isclose(r.nll, nll, rel_tol=1e-5)
    short = perplexity(lm, text, context=16, stride=8)  # less context per token: a different figure
    assert short.tokens == r.tokens and short.perplexity != pytest.approx(r.perplexity, rel=1e-6)


def test_bad_settings_are_refused() -> None:
    lm = tiny_lm()
    with pytest.raises(InvalidRequestError, match="stride"):
        perplexity(lm, "some text here", context=8, stride=9)
    with pytest.raises(InvalidRequestError, match="fewer than 2 tokens"):
        perplexity(lm, "a", context=8, stride=4)


def test_accuracy_and_loss_of_a_classifier() -> None:
    from maas.compress.evaluate import accuracy

    model = torch.nn.Linear(2, 2, bias=False)
    model.weight.data = torch.eye(2)  # logits = inputs: the larger input is the class
    x = torch.tensor([[3.0, 0.0], [0.0, 3.0], [3.0, 0.0], [0.0, 3.0]])
    r = accuracy(model, x, torch.tensor([0, 1, 1, 1]), batch=3)
    assert (r.accuracy, r.examples) == (0.75, 4)
    want = torch.nn.functional.cross_entropy(x, torch.tensor([0, 1, 1, 1]))
    assert r.loss == pytest.approx(float(want))
    with pytest.raises(InvalidRequestError, match="no labelled examples"):
        accuracy(model, x[:0], torch.tensor([], dtype=torch.long))


def test_cosine_to_a_reference_over_the_lines_of_a_text() -> None:
    from maas.compress.evaluate import cosine, sentences

    texts = sentences("one\n\n  two  \nthree\n", limit=2)
    assert texts == ["one", "two"]
    vec = {"one": [1.0, 0.0], "two": [0.0, 1.0]}
    same = cosine(lambda t: [vec[s] for s in t], lambda t: [vec[s] for s in t], texts, "ref")
    assert (same.cosine, same.cosine_min, same.sentences) == (pytest.approx(1.0), pytest.approx(1.0), 2)
    turned = cosine(lambda t: [[1.0, 1.0] for _ in t], lambda t: [vec[s] for s in t], texts, "ref")
    assert turned.cosine == pytest.approx(2**-0.5) and turned.reference == "ref"
    with pytest.raises(InvalidRequestError, match="no sentences"):
        cosine(lambda t: t, lambda t: t, [], "ref")
