import pytest

from maas.errors import InvalidRequestError
from maas.server.protocol import DEFAULTS, ChatCompletionRequest, CompletionRequest

MSG = [{"role": "user", "content": "hi"}]


def test_left_out_sampling_fields_get_local_model_defaults():
    p = ChatCompletionRequest(model="m", messages=MSG).sampling_params()
    assert (p.temperature, p.top_p, p.min_p) == (
        DEFAULTS["temperature"],
        DEFAULTS["top_p"],
        DEFAULTS["min_p"],
    )
    p = ChatCompletionRequest(model="m", messages=MSG, temperature=0, top_p=1, min_p=0).sampling_params()
    assert (p.temperature, p.top_p, p.min_p) == (0, 1, 0)


def test_chat_max_completion_tokens_wins_and_stop_string_becomes_a_list():
    p = ChatCompletionRequest(
        model="m", messages=MSG, max_tokens=5, max_completion_tokens=9, stop="x"
    ).sampling_params()
    assert p.max_tokens == 9 and p.stop == ("x",)


def test_completions_default_to_16_tokens_like_openai():
    assert CompletionRequest(model="m", prompt="a").sampling_params().max_tokens == 16


@pytest.mark.parametrize(
    "kw",
    [{"logit_bias": {"5": 1.0}}, {"top_logprobs": 2}],
)
def test_unsupported_or_inconsistent_fields_are_refused(kw):
    with pytest.raises(InvalidRequestError):
        ChatCompletionRequest(model="m", messages=MSG, **kw).sampling_params()
    with pytest.raises(InvalidRequestError):
        CompletionRequest(model="m", prompt="a", suffix="z").sampling_params()
