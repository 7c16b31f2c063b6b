"""Documents are found the same way however the sources are cut into chunks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maas.data.sources import ReadOptions, chunks, list_sources, read
from maas.errors import InvalidRequestError

TEXT = (
    "first paragraph line one\nline two of it\n \n"
    "second paragraph\n\n\n"
    + "a long paragraph " * 40 + "\n" + "its second line " * 30 + "\n  \n"
    + "\n".join(f"short line {i}" for i in range(30))
    + "\n\nlast one without newline"
)  # fmt: skip


def docs(path: Path, split_by: str, chunk_bytes: int) -> list[tuple[tuple[int, int], str]]:
    options = ReadOptions(split_by)
    out = []
    for c in chunks(list_sources([str(path)]), options, chunk_bytes):
        out += list(read(c, options))
    return out


@pytest.mark.parametrize("split_by", ["paragraph", "line"])
def test_every_chunking_reads_the_same_documents(tmp_path: Path, split_by: str) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    whole = docs(path, split_by, 1 << 20)
    for size in (1, 2, 3, 7, 16, 50, 333, 1000):
        assert docs(path, split_by, size) == whole, size
    texts = [t for _, t in whole]
    if split_by == "paragraph":
        assert texts[0] == "first paragraph line one\nline two of it" and texts[1] == "second paragraph"
        assert len(texts) == 5 and texts[-1] == "last one without newline"
    else:
        assert texts[:3] == ["first paragraph line one", "line two of it", "second paragraph"]
        assert len(texts) == 36
    assert [k for k, _ in whole] == sorted(k for k, _ in whole)


def test_whole_files_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one\n\ntwo\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"body": "x y"}) + "\n\n" + json.dumps({"body": "z"}) + "\n")
    sources = list_sources([str(tmp_path / "*.txt"), str(tmp_path / "b.jsonl")])
    assert [s.format for s in sources] == ["text", "jsonl"]
    files = ReadOptions("file", "body")
    assert [t for c in chunks(sources[:1], files) for _, t in read(c, files)] == ["one\n\ntwo\n"]
    rows = ReadOptions("line", "body")
    assert [t for c in chunks(sources[1:], rows, 5) for _, t in read(c, rows)] == ["x y", "z"]


def test_bad_sources_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="no such file"):
        list_sources([str(tmp_path / "missing-*.txt")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{not json}\n{"other": 1}\n')
    src = list_sources([str(bad)])
    with pytest.raises(InvalidRequestError, match="byte 17: not JSON"):
        list(read(chunks(src, ReadOptions("line"))[0], ReadOptions("line")))


def test_parquet_rows_are_documents(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["one", "", None, "two"], "n": [1, 2, 3, 4]}), tmp_path / "d.parquet")
    src = list_sources([str(tmp_path / "d.parquet")])
    opts = ReadOptions("paragraph", "text")
    assert [d for c in chunks(src, opts, 1) for d in read(c, opts)] == [((0, 0), "one"), ((0, 3), "two")]
