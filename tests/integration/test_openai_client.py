"""The official `openai` client against a real server serving SmolLM2."""

from tests.integration.conftest import MODEL

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def test_capital_of_france_is_paris(client):
    r = client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0, max_tokens=30)
    assert "Paris" in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 10 and 0 < r.usage.completion_tokens <= 30
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_streamed_chat_equals_non_streamed_at_temperature_0(client):
    msgs = [{"role": "user", "content": "Write two sentences about the moon."}]
    whole = client.chat.completions.create(model=MODEL, messages=msgs, temperature=0, max_tokens=48)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=msgs,
        temperature=0,
        max_tokens=48,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            parts.append(c.delta.content or "")
            finish = c.finish_reason or finish
    assert "".join(parts) == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


def test_completions_streaming_and_not(client):
    prompt = "The three primary colors are"
    whole = client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=20)
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=MODEL, prompt=prompt, temperature=0, max_tokens=20, stream=True
        )
        if c.choices
    )
    assert whole.choices[0].text == streamed and len(streamed) > 10
    assert whole.choices[0].finish_reason == "length" and whole.usage.completion_tokens == 20


def test_stop_strings_n_seed_and_logprobs(client):
    base = dict(model=MODEL, prompt="Count: 1, 2, 3, 4, 5,", max_tokens=20, temperature=0)
    r = client.completions.create(**base, stop=[" 8"])
    assert " 8" not in r.choices[0].text and r.choices[0].finish_reason == "stop"
    a = client.completions.create(**{**base, "temperature": 1.0}, seed=42, n=2)
    b = client.completions.create(**{**base, "temperature": 1.0}, seed=42, n=2)
    assert [c.text for c in a.choices] == [c.text for c in b.choices] and len(a.choices) == 2
    lp = client.chat.completions.create(
        model=MODEL, messages=FRANCE, temperature=0, max_tokens=5, logprobs=True, top_logprobs=3
    )
    content = lp.choices[0].logprobs.content
    assert len(content) == lp.usage.completion_tokens
    assert all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in content)
    assert content[0].token == content[0].top_logprobs[0].token  # greedy picks the top token


def test_models_and_health(client, server):
    import httpx

    assert [m.id for m in client.models.list().data] == [MODEL, "all-minilm-l6-v2"]  # the default pair
    h = httpx.get(server.url + "/health").json()
    assert h["status"] == "ok"
    assert httpx.get(server.url + "/docs").status_code == 200


def test_tokenize_gives_the_ids_a_request_runs_and_detokenize_inverts_it(client, server):
    import httpx

    plain = client.completions.create(model=MODEL, prompt="The moon is", max_tokens=1, temperature=0)
    t = httpx.post(
        f"{server.url}/tokenize", json={"model": MODEL, "prompt": "The moon is"}, timeout=60
    ).json()
    assert t["count"] == len(t["tokens"]) == plain.usage.prompt_tokens and t["max_model_len"] == 1024
    chat = client.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=1, temperature=0)
    c = httpx.post(f"{server.url}/tokenize", json={"model": MODEL, "messages": FRANCE, "return_token_strs": True},
                   timeout=60).json()  # fmt: skip
    assert c["count"] == chat.usage.prompt_tokens and len(c["token_strs"]) == c["count"]
    d = httpx.post(f"{server.url}/detokenize", json={"model": MODEL, "tokens": t["tokens"]}, timeout=60)
    assert d.status_code == 200 and d.json()["prompt"].endswith("The moon is")
    for path, body in (("/tokenize", {"model": MODEL}), ("/detokenize", {"model": MODEL, "tokens": [10**9]}),
                       ("/tokenize", {"model": "nope", "prompt": "x"})):  # fmt: skip
        r = httpx.post(f"{server.url}{path}", json=body, timeout=60)
        assert r.status_code in (400, 404) and "error" in r.json(), r.text


def test_legacy_function_fields_are_refused_and_what_happens_anyway_passes(client):
    """The pre-tools `functions` field would change the answer and is not honoured: a 400 naming it."""
    import openai
    import pytest

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=5, functions=[{"name": "f"}])
    assert "functions" in str(e.value)
    ok = client.chat.completions.create(
        model=MODEL, messages=FRANCE, max_tokens=5, response_format={"type": "text"}, tool_choice="none"
    )
    assert ok.choices[0].message.content
