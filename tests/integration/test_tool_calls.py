"""Tool calling through the official client against a real server and the default model."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.conftest import MODEL

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a time zone",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "enum": ["UTC", "CET", "PST"]}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]


def valid_weather(args: dict) -> bool:
    return (
        set(args) == {"city", "unit"}
        and args["unit"] in ("celsius", "fahrenheit")
        and len(args["city"]) <= 40
    )


def valid_time(args: dict) -> bool:
    return set(args) == {"zone"} and args["zone"] in ("UTC", "CET", "PST")


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_required_and_named_always_give_a_valid_call(client, temperature):
    def ask(choice, seed):
        return client.chat.completions.create(
            model=MODEL, messages=ASK, tools=[WEATHER, TIME], tool_choice=choice, temperature=temperature,
            seed=seed, max_tokens=200,
        )  # fmt: skip

    named = {"type": "function", "function": {"name": "get_time"}}
    jobs = [("required", s) for s in range(4)] + [(named, s) for s in range(4)]
    with ThreadPoolExecutor(8) as ex:
        answers = list(ex.map(lambda j: ask(*j), jobs))
    for (choice, _), r in zip(jobs, answers, strict=True):
        msg = r.choices[0].message
        assert msg.tool_calls, msg
        for call in msg.tool_calls:
            args = json.loads(call.function.arguments)
            assert call.type == "function" and call.id.startswith("call_")
            if choice == "required":
                assert call.function.name in ("get_weather", "get_time")
                assert (valid_weather if call.function.name == "get_weather" else valid_time)(args), args
            else:
                assert call.function.name == "get_time" and valid_time(args), args
        assert r.choices[0].finish_reason == ("tool_calls" if choice == "required" else "stop")


def test_auto_answers_in_words_or_with_a_valid_call(client):
    # SmolLM2-135M answers this in prose (also with its own trained tool prompt): auto leaves the choice to
    # the model, and whatever it chose comes back well formed
    r = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], temperature=0, max_tokens=60
    )
    c = r.choices[0]
    if c.message.tool_calls:
        assert c.finish_reason == "tool_calls" and c.message.tool_calls[0].function.name == "get_weather"
        assert valid_weather(json.loads(c.message.tool_calls[0].function.arguments))
    else:
        assert c.message.content and "<tool_call>" not in c.message.content


def test_round_trip_call_then_tool_result_then_answer(client):
    first = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=120
    )
    msg = first.choices[0].message
    call = msg.tool_calls[0]
    assert call.function.name == "get_weather"
    assert "paris" in json.loads(call.function.arguments)["city"].lower()
    history = [
        *ASK,
        {"role": "assistant", "content": msg.content, "tool_calls": [call.model_dump()]},
        {
            "role": "tool",
            "tool_call_id": call.id,
            "content": json.dumps({"temperature_celsius": 21, "sky": "sunny"}),
        },
    ]
    final = client.chat.completions.create(
        model=MODEL, messages=history, tools=[WEATHER], temperature=0, max_tokens=60
    )
    c = final.choices[0]
    assert not c.message.tool_calls and c.finish_reason in ("stop", "length")
    assert "21" in c.message.content or "sunny" in c.message.content.lower(), c.message.content


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_time"}}])
def test_streamed_tool_call_deltas_reassemble_to_the_whole_answer(client, choice):
    kw = {"model": MODEL, "messages": ASK, "tools": [WEATHER, TIME], "tool_choice": choice, "temperature": 0,
          "max_tokens": 150}  # fmt: skip
    whole = client.chat.completions.create(**kw).choices[0]
    calls: dict[int, dict] = {}
    content = ""
    reason = None
    for chunk in client.chat.completions.create(stream=True, **kw):
        ch = chunk.choices[0]
        content += ch.delta.content or ""
        for d in ch.delta.tool_calls or []:
            c = calls.setdefault(d.index, {"name": "", "arguments": ""})
            c["name"] += d.function.name or ""
            c["arguments"] += d.function.arguments or ""
        reason = ch.finish_reason or reason
    want = [
        {"name": c.function.name, "arguments": c.function.arguments} for c in whole.message.tool_calls or []
    ]
    assert want and [calls[i] for i in sorted(calls)] == want
    assert (content or None) == whole.message.content and reason == whole.finish_reason


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools[0].function.name"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array", "uniqueItems": True}}}]},
         "tools[0].function.parameters"),
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "42"}]}, "messages[1].tool_call_id"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]},
         "messages[1].tool_calls[0].function.arguments"),
        ({"tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}}, "tool_choice"),
        ({"functions": [{"name": "f"}]}, "functions"),
    ],
)  # fmt: skip
def test_bad_tool_requests_are_400s_naming_the_field(server, body, param):
    req = {"model": MODEL, "messages": ASK, "max_tokens": 5, **body}
    r = httpx.post(server.url + "/v1/chat/completions", json=req, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.json()
