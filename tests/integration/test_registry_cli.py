"""The registry through the `maas` command and a real server: import -> list -> serve by name -> answer."""

import json
import os
import subprocess
import sys

from openai import OpenAI

from maas.store.builtin import builtin_path
from tests.integration.conftest import start_server, stop_server


def maas(*args, env):
    return subprocess.run(
        [sys.executable, "-m", "maas.cli.main", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_import_list_serve_by_name_tag_rm(tmp_path, monkeypatch):
    env = {**os.environ, "MAAS_HOME": str(tmp_path / "home")}
    monkeypatch.setenv("MAAS_HOME", env["MAAS_HOME"])
    gguf = builtin_path("smollm2-135m-instruct")
    r = maas("models", "import", str(gguf), "--name", "smollm2:q4", env=env)
    assert r.returncode == 0, r.stderr
    r = maas("models", "tag", "smollm2:q4", "smollm2:prod", env=env)
    assert r.returncode == 0, r.stderr
    listed = json.loads(maas("models", "list", "--json", env=env).stdout)
    assert sorted(f"{m['name']}:{m['tag']}" for m in listed) == ["smollm2:prod", "smollm2:q4"]
    assert listed[0]["files"][0]["digest"] == listed[1]["files"][0]["digest"]
    assert "NAME" in maas("models", "list", env=env).stdout

    server = start_server("smollm2:prod", "--max-model-len", "256", "--max-num-seqs", "2")
    try:
        client = OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        cards = {m.id: m.model_dump() for m in client.models.list().data}
        assert set(cards) == {"smollm2:prod", "smollm2:q4"}  # the registry's other tags are servable too
        assert cards["smollm2:prod"]["loaded"] and not cards["smollm2:q4"]["loaded"]
        msg = [{"role": "user", "content": "What is the capital of France?"}]
        r2 = client.chat.completions.create(model="smollm2:prod", messages=msg, temperature=0, max_tokens=20)
        assert "Paris" in r2.choices[0].message.content
        r3 = client.chat.completions.create(model="smollm2:q4", messages=msg, temperature=0, max_tokens=20)
        assert r3.choices[0].message.content == r2.choices[0].message.content  # loaded on first request
        assert {m.id: m.model_dump()["loaded"] for m in client.models.list().data}["smollm2:q4"]
    finally:
        stop_server(server)

    assert maas("models", "verify", env=env).returncode == 0
    assert maas("models", "rm", "smollm2:q4", env=env).returncode == 0
    r = maas("models", "rm", "smollm2:prod", env=env)
    assert r.returncode == 0 and "1 unreferenced blob" in r.stdout
    r = maas("models", "show", "smollm2:prod", env=env)
    assert r.returncode == 2 and r.stderr.startswith("maas: error:") and "Traceback" not in r.stderr


def test_fresh_home_lists_the_builtin_models(tmp_path):
    env = {**os.environ, "MAAS_HOME": str(tmp_path / "fresh"), "MAAS_AUTO_IMPORT_BUILTINS": "1"}
    r = maas("models", "list", "--json", env=env)
    assert r.returncode == 0, r.stderr
    listed = {m["name"]: m for m in json.loads(r.stdout)}
    assert set(listed) == {"smollm2-135m-instruct", "all-minilm-l6-v2"}
    assert (
        listed["smollm2-135m-instruct"]["family"] == "llama"
        and listed["all-minilm-l6-v2"]["family"] == "bert"
    )
    assert maas("models", "rm", "all-minilm-l6-v2", env=env).returncode == 0
    again = json.loads(maas("models", "list", "--json", env=env).stdout)
    assert [m["name"] for m in again] == ["smollm2-135m-instruct"]  # not re-imported behind the user's back
