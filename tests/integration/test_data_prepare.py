"""`maas data prepare` on WikiText-2 with the real SmolLM2 tokenizer: the local engine and Spark at 1, 2 and 5
partitions write the same blocks; the command's output and errors as a user sees them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from maas.data.prepare import PrepareOptions, prepare

WIKI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "wikitext-2"
MAAS = [sys.executable, "-m", "maas.cli.main"]


def options(out: Path, **kw: object) -> PrepareOptions:
    base: dict = dict(sources=(str(WIKI / "valid.txt"),), out=str(out), tokenizer="smollm2-135m-instruct",
                      block_size=128, val_fraction=0.05, test_fraction=0.05)  # fmt: skip
    return PrepareOptions(**(base | kw))


def same(m: dict) -> tuple:
    return m["tokens"], m["blocks"], m["digest"], m["splits"]["val"]["digest"], m["documents"]["kept"]


@pytest.mark.parametrize(
    ("dedup", "partitions"),
    [("near", (5,)), pytest.param("exact", (1, 2, 5), marks=pytest.mark.slow),
     pytest.param("near", (1, 2), marks=pytest.mark.slow)],
)  # fmt: skip
def test_local_and_spark_write_the_same_blocks(
    spark, tmp_path: Path, dedup: str, partitions: tuple[int, ...]
) -> None:
    """The default run: near dedup, Spark at 5 partitions; `-m slow`: exact at 1, 2, 5 and near at 1, 2."""
    local = prepare(options(tmp_path / "local", dedup=dedup))
    assert local["blocks"] > 1000 and local["documents"]["exact_duplicates"] > 0
    for n in partitions:
        m = prepare(options(tmp_path / f"spark{n}", dedup=dedup, engine="spark", partitions=n))
        assert same(m) == same(local), f"{n} partitions"
        assert m["documents"] == local["documents"]  # the same counts at every step
        assert not (tmp_path / f"spark{n}" / "_pieces").exists()


def test_the_command_prepares_shows_and_refuses(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    args = ["data", "prepare", str(WIKI / "test.txt"), "--tokenizer", "smollm2-135m-instruct", "--block-size",
            "256", "--out", str(out), "--val-fraction", "0.1", "--dedup", "near"]  # fmt: skip
    r = subprocess.run([*MAAS, *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "tokens" in r.stdout and "digest   sha256:" in r.stdout and "documents by length" in r.stdout
    shown = subprocess.run([*MAAS, "data", "show", str(out), "--json", "--chart", str(tmp_path / "h.png")],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    m = json.loads(shown.stdout.split("\nchart:")[0])
    assert m["tokens"] == m["blocks"] * 256 and (tmp_path / "h.png").stat().st_size > 1000
    assert m["tokenizer"]["name"] == "smollm2-135m-instruct" and m["sources"][0]["digest"].startswith(
        "sha256:"
    )

    bad = [
        (["data", "prepare", str(tmp_path / "nope.txt"), "--tokenizer", "smollm2-135m-instruct",
          "--block-size", "64", "--out", str(tmp_path / "x")], "no such file"),
        (["data", "prepare", str(WIKI / "test.txt"), "--tokenizer", "no-such-model", "--block-size", "64",
          "--out", str(tmp_path / "x")], "no-such-model"),
        (["data", "prepare", str(WIKI / "test.txt"), "--tokenizer", "smollm2-135m-instruct", "--block-size",
          "100000", "--out", str(tmp_path / "x")], "larger than the model's context"),
        ([*args[:-4], "--val-fraction", "0.2"], "already holds a different dataset"),
    ]  # fmt: skip
    for argv, message in bad:
        r = subprocess.run([*MAAS, *argv], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (argv, r.stderr)
    assert not (tmp_path / "x" / "manifest.json").exists()


def test_a_mistake_found_in_a_spark_executor_is_one_line(spark, tmp_path: Path) -> None:
    from maas.errors import InvalidRequestError

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{not json}\n')
    with pytest.raises(InvalidRequestError, match=r"bad.jsonl at byte 17: not JSON") as info:
        prepare(options(tmp_path / "x", sources=(str(bad),), engine="spark", partitions=2))
    assert "Traceback" not in str(info.value) and "\n" not in str(info.value)
