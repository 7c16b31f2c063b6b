"""Bad input gets OpenAI-style errors with the right status, and the server keeps serving."""

import httpx
import openai
import pytest

from tests.integration.conftest import MODEL

MSG = [{"role": "user", "content": "hi"}]


def post(server, path, body=None, content=None):
    return httpx.post(
        server.url + path,
        json=body,
        content=content,
        headers={"content-type": "application/json"},
        timeout=60,
    )


def check_error(r, status, param=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param:
        assert err["param"] == param
    return err


def test_malformed_json(server):
    err = check_error(post(server, "/v1/chat/completions", content=b'{"model": '), 400)
    assert "JSON" in err["message"]


@pytest.mark.parametrize(
    "body,param",
    [
        ({"model": MODEL, "messages": "hi"}, "messages"),
        ({"model": MODEL, "messages": MSG, "max_tokens": "ten"}, "max_tokens"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, None),
        ({"model": MODEL, "messages": []}, "messages"),
        ({"messages": MSG}, "model"),
        ({"model": MODEL, "messages": MSG, "stream": "yes"}, "stream"),
    ],
)
def test_wrong_types_are_400(server, body, param):
    check_error(post(server, "/v1/chat/completions", body), 400, param)


@pytest.mark.parametrize(
    "extra,param",
    [
        ({"max_tokens": -1}, "max_tokens"),
        ({"top_p": 1.5}, "top_p"),
        ({"temperature": 3}, "temperature"),
        ({"n": 0}, "n"),
        ({"presence_penalty": 9}, "presence_penalty"),
    ],
)
def test_nonsense_parameters_are_400(server, extra, param):
    check_error(post(server, "/v1/chat/completions", {"model": MODEL, "messages": MSG, **extra}), 400, param)


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-17", messages=MSG)
    assert "gpt-17" in str(e.value)


def test_context_overflow_is_400_with_the_numbers(server, client):
    long_prompt = "hello " * 1200
    r = post(server, "/v1/completions", {"model": MODEL, "prompt": long_prompt, "max_tokens": 10})
    err = check_error(r, 400)
    assert err["code"] == "context_length_exceeded" and "1024" in err["message"]
    with pytest.raises(openai.BadRequestError, match="1024"):
        client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=5000)
    # and the server is still fine
    ok = client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=3)
    assert ok.choices[0].message.content is not None
