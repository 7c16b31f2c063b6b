"""`prepare` with the local engine: blocks cut from the documents in key order, splits by hash, errors that
leave no dataset looking complete."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from maas.data import manifest
from maas.data.prepare import PrepareOptions, prepare
from maas.errors import InvalidRequestError

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "while",
    "dogs",
    "ran",
    "far",
    "away",
    "from",
    "home",
    "and",
    "birds",
    "sang",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("corpus")
    paras = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(5 + i % 13)) for i in range(120)]
    paras += paras[:10]  # exact duplicates, later in the file
    (d / "c.txt").write_text("\n\n".join(paras) + "\n")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(paras, trainers.BpeTrainer(vocab_size=80, special_tokens=["</s>", "<unk>"]))
    tok.save(str(d / "tokenizer.json"))
    return d / "c.txt", d / "tokenizer.json"


def options(corpus: tuple[Path, Path], out: Path, **kw: object) -> PrepareOptions:
    base: dict = dict(sources=(str(corpus[0]),), out=str(out), tokenizer=str(corpus[1]), block_size=16,
                      val_fraction=0.2, shard_blocks=3)  # fmt: skip
    return PrepareOptions(**(base | kw))


def test_blocks_are_the_documents_tokens_in_order(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    m = prepare(options(corpus, tmp_path / "ds"))
    assert m["documents"]["read"] == 130 and m["documents"]["exact_duplicates"] == 10
    assert m["documents"]["train_documents"] + m["documents"]["val_documents"] == 120
    assert 0.1 < m["documents"]["val_documents"] / 120 < 0.3
    tok = Tokenizer.from_file(str(corpus[1]))
    train = np.concatenate([np.fromfile(tmp_path / "ds" / s["path"], dtype="<u2")
                            for s in m["splits"]["train"]["shards"]])  # fmt: skip
    assert len(train) == m["splits"]["train"]["blocks"] * 16
    assert all(s["blocks"] <= 3 for s in m["splits"]["train"]["shards"])
    text = tok.decode(train.tolist(), skip_special_tokens=False)
    assert "</s>" in text and text.split("</s>")[0].split() == ["the", "cat", "sat", "on", "a"]
    assert m["stats"]["tokens"] == m["splits"]["train"]["tokens_in"] + m["splits"]["val"]["tokens_in"]
    assert m["tokens"] == m["blocks"] * 16 and m["digest"].startswith("sha256:")


def test_the_same_inputs_are_found_prepared_and_different_ones_refused(
    corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    first = prepare(options(corpus, tmp_path / "ds"))
    assert prepare(options(corpus, tmp_path / "ds")) == first
    with pytest.raises(InvalidRequestError, match="already holds a different dataset"):
        prepare(options(corpus, tmp_path / "ds", seed=1))


def test_bad_input_leaves_no_manifest(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "ds"
    with pytest.raises(InvalidRequestError, match="nothing to train on"):
        prepare(options(corpus, out, min_chars=10_000))
    assert not manifest.exists(str(out))
    for kw, message in [
        ({"sources": (str(tmp_path / "missing.txt"),)}, "no such file"),
        ({"block_size": 1}, "at least 2"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "nothing to train on"),
        ({"dedup": "fuzzy"}, "--dedup"),
        ({"engine": "hadoop"}, "--engine"),
    ]:
        with pytest.raises(InvalidRequestError, match=message):
            prepare(options(corpus, out, **kw))
    assert not manifest.exists(str(out))


def test_show_reads_only_a_manifest(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="no prepared dataset"):
        manifest.read(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(InvalidRequestError, match="not a maas dataset"):
        manifest.read(str(tmp_path))


def test_spark_without_pyspark_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from maas.data.spark import session

    monkeypatch.setitem(sys.modules, "pyspark", None)
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    with pytest.raises(InvalidRequestError, match=r"pip install 'maas\[spark\]'"):
        session("local[1]")
