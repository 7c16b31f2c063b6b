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


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("functions", [{"name": "f"}]),
        ("function_call", "auto"),
        ("audio", {"voice": "alloy"}),
        ("modalities", ["text", "audio"]),
    ],
)
def test_fields_that_would_change_the_answer_and_are_not_honoured_are_a_400_naming_them(field, value):
    """Not silently ignored: a client asking for JSON or a tool call must not get free text and a 200."""
    with pytest.raises(InvalidRequestError) as e:
        ChatCompletionRequest.model_validate({"model": "m", "messages": MSG, field: value}).sampling_params()
    assert e.value.param == field


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("response_format", {"type": "json_object"}),
        ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
        ("guided_choice", ["a", "b"]),
        ("guided_json", {"type": "object"}),
        ("guided_regex", "[0-9]+"),
        ("guided_grammar", 'root ::= "a"'),
    ],
)
def test_structured_output_fields_become_a_grammar_on_both_routes(field, value):
    chat = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": MSG, field: value}
    ).sampling_params()
    text = CompletionRequest.model_validate({"model": "m", "prompt": "a", field: value}).sampling_params()
    assert chat.guide and chat.guide == text.guide


def test_what_happens_anyway_and_unknown_harmless_fields_pass():
    for extra in ({"response_format": {"type": "text"}}, {"tool_choice": "none"}, {"tools": []},
                  {"parallel_tool_calls": True}, {"service_tier": "auto"}, {"metadata": {"a": "b"}}):  # fmt: skip
        ChatCompletionRequest.model_validate({"model": "m", "messages": MSG, **extra}).sampling_params()


def test_a_tool_call_without_a_function_in_the_conversation_is_refused():
    msgs = [*MSG, {"role": "assistant", "tool_calls": [{"id": "1", "type": "function"}]}]
    with pytest.raises(InvalidRequestError) as e:
        ChatCompletionRequest.model_validate({"model": "m", "messages": msgs})
    assert e.value.param == "messages[1].tool_calls[0].function.name"
