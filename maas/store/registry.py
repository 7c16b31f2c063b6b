"""The model registry: import files as content-addressed blobs, name and tag versions, resolve them.

from maas.store.registry import Registry
reg = Registry()                                   # MAAS_HOME, MAAS_DATABASE_URL, MAAS_STORAGE_URL
reg.import_path("model.gguf", "smollm2:q4")
reg.path_for("smollm2:q4")                         # a local path the loaders accept (digests verified)
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError

from maas.config import get_settings
from maas.errors import InvalidRequestError, ModelNotFoundError
from maas.store.blobs import BlobStore, CorruptBlobError, pid_alive
from maas.store.catalog import File, Tag, Version, open_catalog, session
from maas.store.describe import describe_files, read_signature

T = TypeVar("T")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._/-]{0,199}$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def parse_ref(ref: str) -> tuple[str, str]:
    """`name[:tag]` -> (name, tag); the tag defaults to `latest`."""
    name, _, tag = ref.partition(":")
    tag = tag or "latest"
    if not _NAME.match(name) or not _TAG.match(tag):
        raise InvalidRequestError(
            f"bad model reference {ref!r}: use name[:tag] with lowercase letters, digits, '.', '_', '-', '/'"
        )
    return name, tag


@dataclass
class VersionInfo:
    """What `list` and `show` report about one tag."""

    name: str
    tag: str
    version: int
    family: str
    format: str
    size: int
    created: float
    parent: str | None
    operation: str
    files: list[dict[str, Any]]
    metrics: dict[str, Any]
    tags: list[str]
    signature: dict[str, Any] | None = None  # a tensor model's inputs, outputs and labels
    parameters: dict[str, Any] | None = None  # how `operation` made it from `parent` (method, settings, data)
    lineage: list[dict[str, Any]] | None = None  # parent, grandparent, ...: {model, operation, ...}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


class Registry:
    """Names, tags and lineage in the catalog; bytes in the blob store."""

    def __init__(
        self, home: str | Path | None = None, database_url: str | None = None, storage_url: str | None = None
    ):
        s = get_settings()
        self.home = Path(home or s.home).expanduser()
        self.home.mkdir(parents=True, exist_ok=True)
        db = database_url or os.environ.get("MAAS_DATABASE_URL") or f"sqlite:///{self.home / 'catalog.db'}"
        self.blobs = BlobStore(storage_url or os.environ.get("MAAS_STORAGE_URL") or self.home / "blobs")
        self.engine = open_catalog(db)

    # -- writing -------------------------------------------------------------------------------

    def import_path(
        self,
        path: str | Path,
        ref: str,
        parent: str | None = None,
        operation: str = "import",
        metrics: dict[str, Any] | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> VersionInfo:
        """Store a model's files as blobs and point `ref` at the new version (made from `parent` by
        `operation` with `parameters`, when it was)."""
        name, tag = parse_ref(ref)
        family, fmt, files = describe_files(Path(path).expanduser())
        signature = read_signature(Path(path).expanduser(), family)
        total = sum(p.stat().st_size for _, p in files)
        from tqdm import tqdm

        bar = tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc=f"importing {name}:{tag}",
            disable=not sys.stderr.isatty(),
        )
        with self._pending() as protect:
            stored = [(rel, *self.blobs.put_file(p, bar, protect)) for rel, p in files]
            bar.close()
            config = {"signature": signature} if signature else {}
            if parameters:
                config["parameters"] = parameters
            self._commit_import(name, tag, family, fmt, total, parent, operation, metrics, stored, config)
        return self.show(f"{name}:{tag}")

    @contextlib.contextmanager
    def _pending(self) -> Iterator[Callable[[str], None]]:
        """Record the digests an import writes (MAAS_HOME/pending) until its catalog rows commit,
        so that a concurrent `gc` never deletes a blob that is about to be referenced."""
        d = self.home / "pending"
        d.mkdir(exist_ok=True)
        path = d / f"{os.getpid()}-{uuid.uuid4().hex}.json"
        digests: list[str] = []

        def protect(digest: str) -> None:
            digests.append(digest)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(digests))
            os.replace(tmp, path)

        try:
            yield protect
        finally:
            path.unlink(missing_ok=True)

    def _protected(self) -> set[str]:
        """Digests of imports in progress (records of dead processes are removed)."""
        out: set[str] = set()
        for f in (self.home / "pending").glob("*.json"):
            if not pid_alive(f.name.split("-")[0]):
                f.unlink(missing_ok=True)
                continue
            with contextlib.suppress(OSError, ValueError):
                out.update(json.loads(f.read_text()))
        return out

    def _commit_import(
        self,
        name: str,
        tag: str,
        family: str,
        fmt: str,
        total: int,
        parent: str | None,
        operation: str,
        metrics: dict[str, Any] | None,
        stored: list[tuple[str, str, int]],
        config: dict[str, Any],
    ) -> None:

        def write(db: Any) -> None:
            parent_id = self._version(db, parent).id if parent else None
            v = Version(name=name, family=family, format=fmt, size=total, parent_id=parent_id, operation=operation,
                        metrics=metrics or {}, config=config)  # fmt: skip
            v.files = [File(relpath=rel, digest=d, size=n) for rel, d, n in stored]
            db.add(v)
            db.flush()
            self._point(db, name, tag, v.id)

        self._write(write)

    def _write(self, fn: Callable[[Any], T]) -> T:
        """Run `fn(db)` in one transaction; retried when a concurrent writer wins a race (same tag
        created twice, SQLite busy, PostgreSQL serialization failure)."""
        for attempt in range(8):
            try:
                with session(self.engine) as db, db.begin():
                    return fn(db)
            except (IntegrityError, OperationalError) as e:
                if attempt == 7:
                    raise InvalidRequestError(f"the catalog stayed busy or conflicting: {e.orig}") from None
                time.sleep(0.02 * (attempt + 1) + random.random() * 0.03)
        raise AssertionError("unreachable")

    def _point(self, db: Any, name: str, tag: str, version_id: int) -> None:
        row = db.scalar(select(Tag).where(Tag.name == name, Tag.tag == tag))
        if row is None:
            db.add(Tag(name=name, tag=tag, version_id=version_id))
        else:
            old = row.version_id
            row.version_id = version_id
            db.flush()
            self._drop_if_untagged(db, old)

    def add_metrics(self, ref: str, metrics: dict[str, Any]) -> VersionInfo:
        """Merge `metrics` into the version `ref` points at (e.g. what `maas eval` measured)."""

        def write(db: Any) -> None:
            v = self._version(db, ref)
            v.metrics = {**(v.metrics or {}), **metrics}  # a new dict: the JSON column sees the change

        self._write(write)
        return self.show(ref)

    def tag(self, src: str, dst: str) -> VersionInfo:
        """Make `dst` another name for the version `src` points at."""
        name, tag = parse_ref(dst)
        self._write(lambda db: self._point(db, name, tag, self._version(db, src).id))
        return self.show(dst)

    def rm(self, ref: str) -> list[str]:
        """Remove a tag (and its version when no tag is left); collect unreferenced blobs."""
        name, tag = parse_ref(ref)

        def remove(db: Any) -> None:
            row = db.scalar(select(Tag).where(Tag.name == name, Tag.tag == tag))
            if row is None:
                raise ModelNotFoundError(f"no model {name}:{tag} in the registry")
            vid = row.version_id
            db.delete(row)
            db.flush()
            self._drop_if_untagged(db, vid)

        self._write(remove)
        return self.gc()

    def _drop_if_untagged(self, db: Any, version_id: int) -> None:
        if db.scalar(select(Tag).where(Tag.version_id == version_id)) is None:
            v = db.get(Version, version_id)
            children = db.scalars(select(Version).where(Version.parent_id == version_id)).all()
            for c in children:  # keep lineage readable: children forget a deleted parent
                c.parent_id = None
            if v is not None:
                db.delete(v)

    def gc(self) -> list[str]:
        """Delete blobs no file of any version references (and leftovers of interrupted imports)."""
        protected = self._protected()
        with session(self.engine) as db:
            used = set(db.scalars(select(File.digest)).all()) | protected
        self.blobs.clean_temporaries()
        gone = [d for d in self.blobs.digests() if d not in used]
        for d in gone:
            self.blobs.delete(d)
        return gone

    # -- reading -------------------------------------------------------------------------------

    def _version(self, db: Any, ref: str) -> Version:
        name, tag = parse_ref(ref)
        row = db.scalar(select(Tag).where(Tag.name == name, Tag.tag == tag))
        if row is None:
            by_number = db.get(Version, int(tag)) if tag.isdigit() else None  # name:N = version N of name
            if by_number is not None and by_number.name == name:
                return by_number
            known = (
                ", ".join(f"{t.name}:{t.tag}" for t in db.scalars(select(Tag).where(Tag.name == name)))
                or "none"
            )
            raise ModelNotFoundError(f"no model {name}:{tag} in the registry (tags of {name!r}: {known})")
        return db.get(Version, row.version_id)

    def _lineage(self, db: Any, v: Version) -> list[dict[str, Any]]:
        """The versions `v` was made from, nearest first."""
        out: list[dict[str, Any]] = []
        seen = {v.id}
        while v.parent_id is not None and v.parent_id not in seen:
            p = db.get(Version, v.parent_id)
            if p is None:
                break
            seen.add(p.id)
            ref = f"{p.tags[0].name}:{p.tags[0].tag}" if p.tags else f"{p.name}:{p.id}"
            out.append({"model": ref, "version": p.id, "operation": p.operation,
                        "parameters": (p.config or {}).get("parameters")})  # fmt: skip
            v = p
        return out

    def _info(self, db: Any, name: str, tag: str, v: Version) -> VersionInfo:
        lineage = self._lineage(db, v)
        parent = lineage[0]["model"] if lineage else None
        return VersionInfo(
            name=name, tag=tag, version=v.id, family=v.family, format=v.format, size=v.size, created=v.created,
            parent=parent, operation=v.operation,
            files=[{"path": f.relpath, "digest": f.digest, "size": f.size} for f in v.files],
            metrics=dict(v.metrics or {}), tags=sorted(f"{t.name}:{t.tag}" for t in v.tags),
            signature=(v.config or {}).get("signature"), parameters=(v.config or {}).get("parameters"),
            lineage=lineage,
        )  # fmt: skip

    def show(self, ref: str) -> VersionInfo:
        """Everything the catalog knows about one tag (or `name:N`, version number N of name,
        when no tag is called N)."""
        name, tag = parse_ref(ref)
        with session(self.engine) as db:
            return self._info(db, name, tag, self._version(db, ref))

    def list_models(self) -> list[VersionInfo]:
        """Every tag, by name then tag (one catalog session)."""
        with session(self.engine) as db:
            rows = db.scalars(select(Tag).order_by(Tag.name, Tag.tag)).all()
            return [self._info(db, t.name, t.tag, t.version) for t in rows]

    def verify(self, ref: str | None = None) -> list[tuple[str, str, str, bool]]:
        """Re-hash blobs: (model, file, digest, ok) for one model or all."""
        infos = [self.show(ref)] if ref else self.list_models()
        out = []
        for info in infos:
            for f in info.files:
                ok = self.blobs.has(f["digest"]) and self.blobs.verify(f["digest"])
                out.append((f"{info.name}:{info.tag}", f["path"], f["digest"], ok))
        return out

    def path_for(self, ref: str, verify: bool = True) -> Path:
        """A local path the model loaders accept; blobs are re-hashed first unless verify=False.

        Blobs in a non-local store (S3, memory://, ...) are fetched into MAAS_HOME/cache first,
        checked against their digests while they are copied.
        """
        info = self.show(ref)
        local = {f["digest"]: self._local_blob(info, f, verify) for f in info.files}
        if info.format == "gguf" and len(info.files) == 1:
            return local[info.files[0]["digest"]]
        d = self.home / "models" / f"v{info.version}"
        for f in info.files:
            link = d / f["path"]
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() and link.resolve() != local[f["digest"]].resolve():
                link.unlink()
            if not link.is_symlink():
                link.symlink_to(local[f["digest"]])
        return d

    def _local_blob(self, info: VersionInfo, f: dict[str, Any], verify: bool) -> Path:
        digest, where = f["digest"], f"model {info.name}:{info.tag}: blob {f['digest']} ({f['path']})"
        if not self.blobs.has(digest):
            raise CorruptBlobError(f"{where} is missing from the store")
        if self.blobs.local:
            if verify and not self.blobs.verify(digest):
                raise CorruptBlobError(
                    f"{where} does not match its digest; the store is corrupt "
                    "(run `maas models verify`, then re-import the model)"
                )
            p = self.blobs.local_path(digest)
            assert p is not None
            return p
        cache = BlobStore(self.home / "cache")
        if cache.has(digest) and verify and not cache.verify(digest):
            cache.delete(digest)  # a damaged local copy: fetch it again
        if not cache.has(digest):
            try:
                self.blobs.copy_to(cache, digest)
            except CorruptBlobError:
                raise CorruptBlobError(f"{where} does not match its digest in {self.blobs.url}") from None
        p = cache.local_path(digest)
        assert p is not None
        return p
