"""Content-addressed blobs (`sha256-<hex>`) on any fsspec filesystem; local directory by default.

A blob is written to a temporary name, hashed while it is copied, flushed (fsync on local disks)
and only then renamed to its digest: an interrupted write never leaves a half blob under a real name.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec

from maas.errors import MaasError

CHUNK = 4 << 20


class CorruptBlobError(MaasError):
    """A blob's bytes do not hash to its name."""

    kind = "corrupt_blob"


class BlobStore:
    """Blobs under one fsspec URL (`/path`, `file:///path`, `memory://x`, `s3://bucket/x`, ...)."""

    def __init__(self, url: str | Path):
        self.url = str(url)
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.local = "file" in protocols
        self.fs.makedirs(self.root, exist_ok=True)

    def _path(self, digest: str) -> str:
        return f"{self.root.rstrip('/')}/{digest}"

    def local_path(self, digest: str) -> Path | None:
        """A filesystem path to the blob when the store is local (for memory-mapping)."""
        return Path(self._path(digest)) if self.local else None

    def has(self, digest: str) -> bool:
        """True when the blob exists."""
        return bool(self.fs.exists(self._path(digest)))

    def put_file(
        self, src: str | Path, progress: Any = None, before_publish: Callable[[str], None] | None = None
    ) -> tuple[str, int]:
        """Store a local file; return (digest, size). Existing blobs are not rewritten."""
        with open(src, "rb") as fin:
            return self.put_stream(fin, progress, before_publish)

    def put_stream(
        self, fin: Any, progress: Any = None, before_publish: Callable[[str], None] | None = None
    ) -> tuple[str, int]:
        """Store the bytes of a readable binary stream; return (digest, size).

        `before_publish(digest)` runs after hashing and before the blob appears under its name
        (the registry records it there, so that a concurrent gc keeps it).
        """
        h = hashlib.sha256()
        tmp = f"{self.root.rstrip('/')}/.tmp-{os.getpid()}-{uuid.uuid4().hex}"
        size = 0
        try:
            with self.fs.open(tmp, "wb") as fout:
                while chunk := fin.read(CHUNK):
                    h.update(chunk)
                    fout.write(chunk)
                    size += len(chunk)
                    if progress is not None:
                        progress.update(len(chunk))
                if self.local:
                    fout.flush()
                    os.fsync(fout.fileno())
            digest = f"sha256-{h.hexdigest()}"
            if before_publish is not None:
                before_publish(digest)
            if self.has(digest):
                self.fs.rm(tmp)
            else:
                self.fs.mv(tmp, self._path(digest))
            return digest, size
        except BaseException:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)
            raise

    def copy_to(self, other: BlobStore, digest: str) -> None:
        """Copy one blob into another store, checking its bytes on the way (CorruptBlobError if bad)."""
        with self.fs.open(self._path(digest), "rb") as fin:
            got, _ = other.put_stream(fin)
        if got != digest:
            other.delete(got)
            raise CorruptBlobError(
                f"blob {digest} in {self.url} does not match its digest (its bytes hash to {got})"
            )

    def verify(self, digest: str) -> bool:
        """Re-hash a blob; True when its bytes match its name."""
        h = hashlib.sha256()
        with self.fs.open(self._path(digest), "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return f"sha256-{h.hexdigest()}" == digest

    def delete(self, digest: str) -> None:
        """Remove a blob (no error when it is already gone)."""
        if self.has(digest):
            self.fs.rm(self._path(digest))

    def digests(self) -> list[str]:
        """Every stored blob name."""
        return sorted(
            name.rsplit("/", 1)[-1]
            for name in self.fs.ls(self.root, detail=False)
            if name.rsplit("/", 1)[-1].startswith("sha256-")
        )

    def clean_temporaries(self) -> int:
        """Remove leftovers of interrupted writes (temporaries whose writing process is gone)."""
        left = [
            n
            for n in self.fs.ls(self.root, detail=False)
            if n.rsplit("/", 1)[-1].startswith(".tmp-") and not pid_alive(n.rsplit("/", 1)[-1].split("-")[1])
        ]
        for n in left:
            self.fs.rm(n)
        return len(left)


def pid_alive(pid: str | int) -> bool:
    """True when a process with this id runs on this host (False for anything unparsable)."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True
