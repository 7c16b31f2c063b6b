"""Sources of a corpus: files and URLs (globs, any fsspec URL) cut into chunks that any engine reads alike.

A chunk is a byte range of one line-oriented file (text, JSONL) or a whole file (`--split-by file`,
Parquet). A document belongs to the chunk where it starts and is keyed by (source index, byte offset or row):
the key orders documents the same way however many chunks or partitions read them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from maas.errors import InvalidRequestError

SPLIT_BY = ("line", "paragraph", "file")
CHUNK_BYTES = 8 << 20


@dataclass(frozen=True)
class Source:
    """One file of the corpus: its URL, index in the corpus, size and format."""

    index: int
    url: str
    size: int
    format: str  # text | jsonl | parquet


@dataclass(frozen=True)
class Chunk:
    """Bytes [start, end) of a source (the whole file for parquet and --split-by file)."""

    source: Source
    start: int
    end: int


@dataclass(frozen=True)
class ReadOptions:
    """How documents are found in a source."""

    split_by: str = "paragraph"
    text_field: str = "text"


def _format(url: str) -> str:
    path = url.split("?")[0].lower()
    if path.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if path.endswith(".parquet"):
        return "parquet"
    return "text"


def list_sources(patterns: list[str]) -> list[Source]:
    """The files the patterns name (globs expanded, sorted within a pattern), in order."""
    import fsspec

    out: list[Source] = []
    for pattern in patterns:
        fs, _, paths = fsspec.get_fs_token_paths(pattern)
        paths = sorted(p for p in paths if fs.isfile(p))
        if not paths:
            raise InvalidRequestError(f"source {pattern!r}: no such file")
        for p in paths:
            url = p if "://" not in pattern else f"{pattern.split('://', 1)[0]}://{p}"
            out.append(Source(len(out), url, int(fs.size(p)), _format(url)))
    return out


def chunks(sources: list[Source], options: ReadOptions, chunk_bytes: int = CHUNK_BYTES) -> list[Chunk]:
    """Each source cut into chunks of about `chunk_bytes` (whole files where documents can span them)."""
    out: list[Chunk] = []
    for s in sources:
        if s.format == "parquet" or options.split_by == "file" or s.size <= chunk_bytes:
            out.append(Chunk(s, 0, s.size))
            continue
        out += [Chunk(s, a, min(a + chunk_bytes, s.size)) for a in range(0, s.size, chunk_bytes)]
    return out


def digest(source: Source) -> str:
    """sha256 of the source's bytes."""
    import fsspec

    h = hashlib.sha256()
    with fsspec.open(source.url, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return "sha256:" + h.hexdigest()


def read(chunk: Chunk, options: ReadOptions) -> Iterator[tuple[tuple[int, int], str]]:
    """The documents that start in the chunk: ((source index, offset), text)."""
    s = chunk.source
    if s.format == "parquet":
        yield from _parquet(chunk, options)
        return
    import fsspec

    with fsspec.open(s.url, "rb") as f:
        if options.split_by == "file":
            text = f.read().decode("utf-8", errors="replace")
            if text.strip():
                yield (s.index, 0), _doc(text, s, 0, options)
            return
        for offset, text in _units(f, chunk, options.split_by == "paragraph" and s.format == "text"):
            yield (s.index, offset), _doc(text, s, offset, options)


def _doc(text: str, s: Source, offset: int, options: ReadOptions) -> str:
    if s.format != "jsonl":
        return text
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidRequestError(f"{s.url} at byte {offset}: not JSON ({e.msg})") from None
    value = obj.get(options.text_field) if isinstance(obj, dict) else None
    if not isinstance(value, str):
        raise InvalidRequestError(
            f"{s.url} at byte {offset}: no string field {options.text_field!r} (--text-field)"
        )
    return value


def _lines(f: Any, start: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line) from the first line that starts at or after `start`."""
    pos = start
    if start > 0:
        f.seek(start - 1)
        pos = start - 1 + len(f.readline())  # the rest of the line that started before the chunk
    else:
        f.seek(0)
    while line := f.readline():
        yield pos, line
        pos += len(line)


def _units(f: Any, chunk: Chunk, paragraphs: bool) -> Iterator[tuple[int, str]]:
    """Lines (or paragraphs: runs of non-blank lines) that start in the chunk, with their offsets."""
    if not paragraphs:
        for pos, line in _lines(f, chunk.start):
            if pos >= chunk.end:
                return
            if line.strip():
                yield pos, line.decode("utf-8", errors="replace").strip()
        return
    begins_paragraph = chunk.start == 0 or _previous_line_blank(f, chunk.start)
    para: list[bytes] = []
    para_at = -1
    for pos, line in _lines(f, chunk.start):
        if not line.strip():
            if para:
                yield para_at, b"".join(para).decode("utf-8", errors="replace").strip()
                para = []
            if pos >= chunk.end:
                return
            begins_paragraph = True
            continue
        if not para:
            if pos >= chunk.end:
                return
            if not begins_paragraph:
                continue  # the tail of a paragraph the previous chunk owns
            para_at = pos
        para.append(line)
    if para:
        yield para_at, b"".join(para).decode("utf-8", errors="replace").strip()


def _previous_line_blank(f: Any, start: int) -> bool:
    """Whether the line before the first line that starts at or after `start` is blank."""
    f.seek(start - 1)
    first = start - 1 + len(f.readline())
    back = min(first, 1 << 16)
    f.seek(first - back)
    body = f.read(back)[:-1]  # up to the newline that ends the previous line
    return not body[body.rfind(b"\n") + 1 :].strip()


def _parquet(chunk: Chunk, options: ReadOptions) -> Iterator[tuple[tuple[int, int], str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidRequestError("Parquet sources need pyarrow: pip install pyarrow") from None
    import fsspec

    s = chunk.source
    with fsspec.open(s.url, "rb") as f:
        table = pq.read_table(f, columns=[options.text_field])
    for row, value in enumerate(table.column(options.text_field).to_pylist()):
        if isinstance(value, str) and value.strip():
            yield (s.index, row), value
