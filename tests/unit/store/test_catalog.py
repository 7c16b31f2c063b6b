import os

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from maas.store.catalog import Base, open_catalog


def catalogs(tmp_path):
    urls = [f"sqlite:///{tmp_path / 'c.db'}"]
    if os.environ.get("MAAS_TEST_DATABASE_URL"):
        urls.append(os.environ["MAAS_TEST_DATABASE_URL"])
    return urls


def test_migrations_build_exactly_the_orm_schema_and_are_idempotent(tmp_path):
    for url in catalogs(tmp_path):
        engine = open_catalog(url)
        open_catalog(url)  # a second open is a no-op
        assert {"versions", "files", "tags", "alembic_version"} <= set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], diff


@pytest.mark.skipif(
    not os.environ.get("MAAS_TEST_DATABASE_URL"), reason="MAAS_TEST_DATABASE_URL not set (no PostgreSQL)"
)
def test_postgresql_catalog_is_reachable():
    engine = open_catalog(os.environ["MAAS_TEST_DATABASE_URL"])
    assert engine.dialect.name == "postgresql"
