"""The catalog: model versions, their files (blob digests), tags and lineage, through SQLAlchemy.

SQLite file by default; any SQLAlchemy URL (PostgreSQL) through MAAS_DATABASE_URL.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, UniqueConstraint, create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship


class Base(DeclarativeBase):
    """Declarative base of the catalog tables."""


class Version(Base):
    """One immutable model version: a manifest of files plus what it is and where it came from."""

    __tablename__ = "versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    family: Mapped[str] = mapped_column(String(50))
    format: Mapped[str] = mapped_column(String(20))
    size: Mapped[int] = mapped_column(Integer)
    created: Mapped[float] = mapped_column(Float, default=time.time)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("versions.id"), nullable=True)
    operation: Mapped[str] = mapped_column(String(20), default="import")
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    files: Mapped[list[File]] = relationship(back_populates="version", cascade="all, delete-orphan")
    tags: Mapped[list[Tag]] = relationship(back_populates="version", cascade="all, delete-orphan")


class File(Base):
    """A file of a version: its path inside the model and the blob that holds its bytes."""

    __tablename__ = "files"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), index=True)
    relpath: Mapped[str] = mapped_column(String(500))
    digest: Mapped[str] = mapped_column(String(80), index=True)
    size: Mapped[int] = mapped_column(Integer)
    version: Mapped[Version] = relationship(back_populates="files")


class Tag(Base):
    """`name:tag` -> version. Several tags may point at one version (aliases)."""

    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("name", "tag"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    tag: Mapped[str] = mapped_column(String(100))
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), index=True)
    version: Mapped[Version] = relationship(back_populates="tags")


def open_catalog(url: str) -> Engine:
    """Connect (creating tables on first use); SQLite gets WAL and a busy timeout for concurrency."""
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    for attempt in range(5):
        try:
            migrate(engine)
            break
        except (OperationalError, IntegrityError, ProgrammingError):
            # another process created the tables between our check and our change: look again
            if attempt == 4:
                raise
            time.sleep(0.1 * (attempt + 1))
    return engine


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (a no-op when it is there already)."""
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)  # before import: it logs while loading

    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # one migrating process at a time
            conn.execute(text("SELECT pg_advisory_xact_lock(7236001)"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def session(engine: Engine) -> Session:
    """A new ORM session."""
    return Session(engine, expire_on_commit=False)
