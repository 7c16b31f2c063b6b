"""At scale (slow): a corpus 20x WikiText-2 built from it with perturbations, planted near-duplicates found
by MinHash, and training streaming it with the memory of a corpus 20 times smaller."""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from maas.data.prepare import PrepareOptions, prepare

WIKI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "wikitext-2"
MAAS = [sys.executable, "-m", "maas.cli.main"]
pytestmark = pytest.mark.slow


def paragraphs() -> list[str]:
    text = (WIKI / "valid.txt").read_text() + (WIKI / "test.txt").read_text()
    return [p.strip() for p in text.split("\n") if len(p.split()) >= 20]


def synthetic(path: Path, copies: int, seed: int = 0, every: int = 60) -> set[str]:
    """Copies of WikiText's paragraphs with their words shuffled (no two alike), and a near copy of one
    paragraph in twenty among those of at least `every` words, with one word in `every` replaced (about 0.8
    Jaccard similarity of word 5-grams, above near_dup's 0.7), planted later; the planted texts."""
    rng = random.Random(seed)
    base = paragraphs()
    docs: list[str] = []
    for _ in range(copies):
        for p in base:
            words = p.split()
            rng.shuffle(words)
            docs.append(" ".join(words))
    planted = []
    for d in rng.sample(docs, len(docs) // 20):
        words = d.split()
        if len(words) < every:
            continue
        for i in rng.sample(range(len(words)), len(words) // every):
            words[i] = rng.choice(["alpha", "beta", "gamma"])
        planted.append(" ".join(words))
    path.write_text("\n\n".join(docs + planted) + "\n")
    return set(planted)


def test_planted_near_duplicates_at_20x(tmp_path: Path) -> None:
    corpus = tmp_path / "big.txt"
    planted = synthetic(corpus, 20)
    assert (
        corpus.stat().st_size
        >= 20 * ((WIKI / "valid.txt").stat().st_size + (WIKI / "test.txt").stat().st_size) * 0.9
    )
    from maas.data import local
    from maas.data.prepare import make_plan

    plan = make_plan(PrepareOptions((str(corpus),), str(tmp_path / "ds"), "smollm2-135m-instruct", 256,
                                    dedup="near"))  # fmt: skip
    kept = {d[1] for d in local.documents(plan)}
    dropped = plan.counts["near_duplicates"]
    found = len(planted - kept)
    precision, recall = found / max(dropped, 1), found / len(planted)
    print(
        f"near duplicates: {dropped} dropped, {len(planted)} planted; precision {precision:.3f}, recall {recall:.3f}"
    )
    assert precision >= 0.9 and recall >= 0.9


def peak_rss(cmd: list[str]) -> float:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ps, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, sum(p.memory_info().rss for p in [ps, *ps.children(recursive=True)]))
        time.sleep(0.05)
    assert proc.returncode == 0
    return peak / 2**20


def test_training_streams_20x_with_flat_memory(tmp_path: Path) -> None:
    synthetic(tmp_path / "big.txt", 20)
    synthetic(tmp_path / "small.txt", 1)
    rss = {}
    for name in ("small", "big"):
        prepare(PrepareOptions((str(tmp_path / f"{name}.txt"),), str(tmp_path / name), "smollm2-135m-instruct", 64,
                               dedup="none", val_fraction=0.01))  # fmt: skip
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(f"""
name: scale-{name}
model: {{arch: llama, params: {{hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4,
        intermediate_size: 192, max_position_embeddings: 128}}}}
data: {{kind: text, train: {tmp_path / name}, tokenizer: smollm2-135m-instruct, block_size: 64}}
train: {{steps: 200, batch_size: 8, eval_every: 1000, checkpoint_every: 1000, log_every: 50}}
output: {{dir: {tmp_path / ("run-" + name)}}}
""")
        rss[name] = peak_rss([*MAAS, "train", str(cfg), "--no-register"])
    print(f"peak RSS training 200 steps: 1x corpus {rss['small']:.0f} MiB, 20x corpus {rss['big']:.0f} MiB")
    assert rss["big"] < rss["small"] + 64
