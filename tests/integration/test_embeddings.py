"""/v1/embeddings on a real server with the default encoder, through the official openai client."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from maas.store.builtin import builtin_path

EMB = "all-minilm-l6-v2"
WIKI = Path(__file__).resolve().parents[3] / "shared" / "data" / "wikitext-2" / "valid.txt"


def sentences(n: int) -> list[str]:
    out = []
    for line in WIKI.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if len(line) > 30 and not line.startswith("="):
            out.extend(s.strip() + "." for s in line.split(" . ") if len(s.strip()) > 20)
        if len(out) >= n:
            break
    return out[:n]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_parity_with_sentence_transformers(client):
    from sentence_transformers import SentenceTransformer

    texts = sentences(300)
    assert len(texts) == 300
    st = SentenceTransformer(str(builtin_path(EMB)), device="cpu")
    want = st.encode(texts, batch_size=32)

    def one(text: str):  # type: ignore[no-untyped-def]
        return client.embeddings.create(model=EMB, input=text, extra_body={"truncate": True})

    with ThreadPoolExecutor(8) as ex:  # single sentences, some batched together: small batches
        got = [r.data[0].embedding for r in ex.map(one, texts[:100])]
    for i in range(100, len(texts), 100):  # large batches
        r = client.embeddings.create(model=EMB, input=texts[i : i + 100], extra_body={"truncate": True})
        got += [d.embedding for d in sorted(r.data, key=lambda d: d.index)]
    cos = cosine(np.array(got), want)
    assert cos.min() >= 0.9999, cos.min()


def test_single_batched_float_and_base64(client):
    one = client.embeddings.create(model=EMB, input="The cat sat on the mat.")
    assert one.object == "list" and one.model == EMB and len(one.data) == 1
    v = np.array(one.data[0].embedding)
    assert v.shape == (384,) and abs(np.linalg.norm(v) - 1) < 1e-5  # the model normalizes
    assert one.usage.prompt_tokens == one.usage.total_tokens > 2
    many = client.embeddings.create(
        model=EMB, input=["A dog ran.", "The cat sat on the mat.", "Stocks fell."]
    )
    assert [d.index for d in many.data] == [0, 1, 2]
    np.testing.assert_allclose(many.data[1].embedding, v, atol=1e-5)  # same vector alone or in a batch
    b64 = client.embeddings.create(model=EMB, input=["The cat sat on the mat."], encoding_format="base64")
    decoded = np.frombuffer(base64.b64decode(b64.data[0].embedding), dtype="<f4")
    np.testing.assert_allclose(decoded, v, atol=1e-6)
    sims = np.array([d.embedding for d in many.data]) @ v
    assert sims[1] > sims[0] > sims[2] or sims[1] > sims[2]  # itself first
    short = client.embeddings.create(model=EMB, input="The cat sat on the mat.", dimensions=64)
    s = np.array(short.data[0].embedding)
    assert s.shape == (64,) and abs(np.linalg.norm(s) - 1) < 1e-5


def test_token_id_inputs(client, server):
    text = client.embeddings.create(model=EMB, input="hello world").data[0].embedding
    ids = [101, 7592, 2088, 102]  # [CLS] hello world [SEP] in this model's vocabulary
    r = httpx.post(server.url + "/v1/embeddings", json={"model": EMB, "input": ids}, timeout=30).json()
    np.testing.assert_allclose(r["data"][0]["embedding"], text, atol=1e-5)
    r = httpx.post(
        server.url + "/v1/embeddings", json={"model": EMB, "input": [ids, ids[:3]]}, timeout=30
    ).json()
    assert len(r["data"]) == 2 and r["usage"]["prompt_tokens"] == 7


@pytest.mark.parametrize(
    "body,status,param",
    [
        ({"model": EMB, "input": []}, 400, "input"),
        ({"model": EMB, "input": ""}, 400, "input"),
        ({"model": EMB, "input": 5}, 400, "input"),
        ({"model": EMB, "input": ["ok", 3]}, 400, "input"),
        ({"model": EMB, "input": [[101, 99999999, 102]]}, 400, "input"),
        ({"model": EMB, "input": "x", "dimensions": 0}, 400, "dimensions"),
        ({"model": EMB, "input": "x", "dimensions": 385}, 400, "dimensions"),
        ({"model": EMB, "input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
        ({"model": EMB, "input": "word " * 400}, 400, "input"),
        ({"model": "smollm2-135m-instruct", "input": "x"}, 400, "model"),
        ({"model": "no-such-model", "input": "x"}, 404, None),
        ({"input": "x"}, 400, "model"),
    ],
)
def test_bad_requests(server, body, status, param):
    r = httpx.post(server.url + "/v1/embeddings", json=body, timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and (param is None or err["param"] == param), err


def test_too_long_input_truncated_on_request(server):
    long = "word " * 400
    r = httpx.post(server.url + "/v1/embeddings", json={"model": EMB, "input": long}, timeout=30)
    assert r.json()["error"]["code"] == "context_length_exceeded" and "256" in r.json()["error"]["message"]
    r = httpx.post(
        server.url + "/v1/embeddings", json={"model": EMB, "input": long, "truncate": True}, timeout=30
    )
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 256


def test_an_embedding_model_refuses_chat(server):
    r = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": EMB, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert r.status_code == 400 and "embedding model" in r.json()["error"]["message"]


def test_concurrent_clients_are_batched_and_routed(client, server):
    texts = sentences(64)
    alone = {t: np.array(client.embeddings.create(model=EMB, input=t).data[0].embedding) for t in texts[:8]}
    before = httpx.get(server.url + "/health", timeout=10).json()["models"][EMB]
    with ThreadPoolExecutor(32) as ex:
        got = list(ex.map(lambda t: client.embeddings.create(model=EMB, input=t).data[0].embedding, texts))
    after = httpx.get(server.url + "/health", timeout=10).json()["models"][EMB]
    mine = cosine(np.array(got[:8]), np.array([alone[t] for t in texts[:8]]))
    assert mine.min() >= 0.9999  # each caller got its own vector (float32 or float16 weights)
    assert after["sequences"] - before["sequences"] == 64
    assert after["batches"] - before["batches"] < 64  # several requests shared forward passes


def test_maas_embed_command():
    cmd = [sys.executable, "-m", "maas.cli.main", "embed", EMB, "The cat sat.", "A dog ran."]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [list(map(float, line.split())) for line in r.stdout.splitlines()]
    assert len(rows) == 2 and all(len(x) == 384 for x in rows)
    r = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=120)
    data = json.loads(r.stdout)
    assert [d["text"] for d in data] == ["The cat sat.", "A dog ran."]
    np.testing.assert_allclose(data[0]["embedding"], rows[0], atol=1e-5)
    r = subprocess.run(
        [sys.executable, "-m", "maas.cli.main", "embed", "smollm2-135m-instruct", "x"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "not an embedding model" in r.stderr and "Traceback" not in r.stderr
