"""The `maas` command as a user runs it."""

import os
import subprocess
import sys

MAAS = [sys.executable, "-m", "maas.cli.main"]


def run(*args, input=None, timeout=300):
    return subprocess.run([*MAAS, *args], capture_output=True, text=True, input=input, timeout=timeout)


def test_help_on_every_verb():
    top = run("--help")
    verbs = top.stdout.split("positional arguments:")[1].split("options:")[0].split()
    listed = [v for v in verbs if v.isalpha() and v.islower()]
    assert {"serve", "run", "train", "quantize", "prune", "distill", "models", "bench"} <= set(listed)
    for verb in ["serve", "run", "embed", "predict", "train", "export", "eval", "quantize", "prune", "compare",
                 "distill", "models", "bench", "kernels", "info", "data"]:  # fmt: skip
        r = run(verb, "--help")
        assert r.returncode == 0 and "usage: maas" in r.stdout, verb
        assert verb in top.stdout, f"`maas --help` does not list {verb}"


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """`maas models list --json | head`: no BrokenPipeError traceback when the pipe's reader is gone."""
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first line is written
    try:
        p = subprocess.run([*MAAS, "models", "list", "--json"], stdout=w, stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(w)
    assert p.returncode == 141
    assert b"Traceback" not in p.stderr and b"BrokenPipe" not in p.stderr


def test_run_answers_a_prompt():
    r = run("run", "smollm2-135m-instruct", "What is the capital of France?", "--temperature", "0")
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout


def test_run_interactive_chat_keeps_the_conversation():
    r = run("run", "smollm2-135m-instruct", "--temperature", "0", "--max-tokens", "30",
            input="What is the capital of France?\nAnd of Italy?\n")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout and "Rome" in r.stdout


def test_user_mistakes_are_one_line_errors(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 20)
    for args in (
        ["run", "no-such-model", "hi"],
        ["serve", str(tmp_path / "missing.gguf")],
        ["run", str(bad), "hi"],
    ):
        r = run(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr and r.stderr.startswith("maas: error:"), r.stderr
