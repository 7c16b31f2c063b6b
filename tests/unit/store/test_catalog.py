from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from maas.store.catalog import Base, open_catalog


def test_migrations_build_exactly_the_orm_schema_and_are_idempotent(catalog_url):
    engine = open_catalog(catalog_url)
    open_catalog(catalog_url)  # a second open is a no-op
    assert engine.dialect.name == catalog_url.split(":")[0].split("+")[0]
    assert {"versions", "files", "tags", "alembic_version"} <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], diff
