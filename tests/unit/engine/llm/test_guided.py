"""Grammar-constrained generation on a tiny random model: the output follows the grammar whatever the
weights say, alone or in a batch with free requests."""

import json
import re

import pytest
import torch

from maas.engine.llm.guided import apply_masks
from maas.engine.llm.sampling_params import SamplingParams
from maas.errors import InvalidRequestError
from maas.text import grammar
from tests.conftest import make_engine
from tests.unit.engine.llm.test_engine import prompts


def run(engine, ps, params_list):
    for i, (p, params) in enumerate(zip(ps, params_list, strict=True)):
        engine.add_request(f"r{i}", p, params)
    texts = {f"r{i}": "" for i in range(len(ps))}
    reasons = {}
    while engine.has_unfinished():
        for o in engine.step():
            texts[o.request_id] += o.text
            if o.finished:
                reasons[o.request_id] = o.finish_reason
    return [texts[f"r{i}"] for i in range(len(ps))], [reasons[f"r{i}"] for i in range(len(ps))]


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "n": {"type": "integer", "minimum": 0, "maximum": 99},
        "kind": {"enum": ["a", "b"]},
        "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 2},
    },
    "required": ["name", "n", "kind", "tags"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_random_weights_still_write_valid_json_next_to_free_requests(lm, temperature):
    eng = make_engine(lm)
    guided = SamplingParams(
        temperature=temperature, seed=3, max_tokens=120, guide=grammar.json_schema_grammar(SCHEMA, "f")
    )
    free = SamplingParams(temperature=temperature, seed=3, max_tokens=20, ignore_eos=True)
    ps = prompts(6, seed=5)
    texts, reasons = run(eng, ps, [guided, free] * 3)
    for text, reason in zip(texts[::2], reasons[::2], strict=True):
        obj = json.loads(text)
        assert reason == "stop"  # the grammar completed: the request ends there
        assert set(obj) == {"name", "n", "kind", "tags"} and len(obj["name"]) <= 6
        assert 0 <= obj["n"] <= 99 and obj["kind"] in ("a", "b") and len(obj["tags"]) <= 2
    alone, _ = run(make_engine(lm), ps[1:2], [free])
    assert texts[1] == alone[0]  # the free neighbour is untouched by the masks


def test_choice_and_regex(lm):
    eng = make_engine(lm)
    choice = SamplingParams(
        temperature=1.0, seed=1, max_tokens=30, guide=grammar.choice_grammar(["alpha", "beta", "gamma"], "f")
    )
    rx = SamplingParams(
        temperature=1.0, seed=2, max_tokens=30, guide=grammar.regex_grammar(r"[0-9]{2}-[xy]+", "f")
    )
    texts, _ = run(eng, prompts(8, seed=6), [choice, rx] * 4)
    assert all(t in ("alpha", "beta", "gamma") for t in texts[::2]), texts
    assert all(re.fullmatch(r"[0-9]{2}-[xy]+", t) for t in texts[1::2]), texts


def test_max_tokens_cuts_a_guided_answer_with_length(lm):
    eng = make_engine(lm)
    p = SamplingParams(temperature=0, max_tokens=3, guide=grammar.regex_grammar("[a-z]{10}", "f"))
    texts, reasons = run(eng, prompts(1), [p])
    assert reasons == ["length"] and re.fullmatch("[a-z]{3}", texts[0])


def test_masks_forbid_exactly_what_the_matcher_forbids(lm):
    eng = make_engine(lm)
    m = eng.grammars.matcher(grammar.regex_grammar("[ab]c", "f"))
    logits = torch.zeros(3, 264)
    apply_masks(logits, [None, m, None])
    allowed = (logits[1] > float("-inf")).nonzero().flatten().tolist()
    assert allowed == [ord("a"), ord("b")]
    assert torch.all(logits[0] == 0) and torch.all(logits[2] == 0)


def test_a_grammar_the_vocabulary_cannot_follow_is_refused(lm):
    eng = make_engine(lm)
    with pytest.raises(InvalidRequestError):
        eng.grammars.matcher("this is not a grammar {")
