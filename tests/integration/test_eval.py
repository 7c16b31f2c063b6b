"""`maas eval`: SmolLM2's sliding-window perplexity on WikiText-2 test, the same from the command
line as in-process, recorded on the registry version (encoders and classifiers: test_compression.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from maas.compress.evaluate import perplexity
from maas.engine.llm.loader import load_lm
from maas.store.registry import Registry

TEST = Path(__file__).resolve().parents[3] / "shared/data/wikitext-2/test.txt"


@pytest.mark.skipif(not TEST.exists(), reason="../shared/data/wikitext-2 is not beside the checkout")
def test_maas_eval_matches_in_process_and_is_recorded(tmp_path: Path) -> None:
    env = {**os.environ, "MAAS_HOME": str(tmp_path / "home"), "MAAS_AUTO_IMPORT_BUILTINS": "1"}
    args = ["eval", "smollm2-135m-instruct", "--data", str(TEST), "--limit", "768", "--context", "256",
            "--stride", "128", "--json"]  # fmt: skip
    r = subprocess.run([sys.executable, "-m", "maas.cli.main", *args], capture_output=True, text=True, env=env,
                       timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    reg = Registry(home=tmp_path / "home")
    lm = load_lm(reg.path_for("smollm2-135m-instruct"), device="cpu", dtype="float32")
    want = perplexity(lm, TEST.read_text(encoding="utf-8"), context=256, stride=128, limit=768)
    assert got["tokens"] == want.tokens == 767
    assert got["perplexity"] == pytest.approx(want.perplexity, rel=1e-4)
    assert 5 < got["perplexity"] < 100  # a working small LM on WikiText, not a broken one
    assert reg.show("smollm2-135m-instruct").metrics["eval"]["perplexity"] == got["perplexity"]
    bad = subprocess.run([sys.executable, "-m", "maas.cli.main", "eval", "all-minilm-l6-v2", "--data", str(TEST)],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "give --reference" in bad.stderr and "Traceback" not in bad.stderr
