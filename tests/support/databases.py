"""Test databases: a migrated SQLite file per test, a fresh PostgreSQL database per session.

tests/conftest.py loads this module as a pytest plugin: every test may ask for
``database_url``, parametrized over ["sqlite", "postgres"].
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tdx_boot_attest.server.db.migrate import upgrade

PG_ADMIN_URL = os.environ.get(
    "TDX_ATTEST_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
DB_KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _admin_engine() -> sa.Engine:
    url = sa.make_url(PG_ADMIN_URL)
    if url.drivername in {"postgresql", "postgres"}:
        url = url.set(drivername="postgresql+psycopg")
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def create_postgres_database() -> str:
    """Create an empty database with a random name; return its URL."""
    name = f"tdxattest_{secrets.token_hex(6)}"
    engine = _admin_engine()
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    url = sa.make_url(PG_ADMIN_URL).set(drivername="postgresql+psycopg", database=name)
    return url.render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    """Drop a database made by create_postgres_database (disconnecting its users)."""
    name = sa.make_url(url).database
    engine = _admin_engine()
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()


def clear_tables(url: str) -> None:
    """Empty every application table (the schema stays at its revision)."""
    engine = sa.create_engine(sa.make_url(url), poolclass=sa.pool.NullPool)
    try:
        inspector = sa.inspect(engine)
        tables = [t for t in inspector.get_table_names() if t != "alembic_version"]
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                if tables:
                    quoted = ", ".join(f'"{t}"' for t in tables)
                    conn.exec_driver_sql(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE")
            else:
                conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                for table in tables:
                    conn.exec_driver_sql(f'DELETE FROM "{table}"')  # noqa: S608 - reflected names
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_database_url() -> Iterator[str]:
    """A migrated PostgreSQL database private to this test session, dropped at the end."""
    url = create_postgres_database()
    try:
        upgrade(url)
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that tests copy (migrating once per session)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.sqlite"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=DB_KINDS)
def db_kind(request: pytest.FixtureRequest) -> str:
    """ "sqlite" or "postgres"."""
    kind: str = request.param
    return kind


@pytest.fixture
def database_url(db_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of kind ``db_kind`` for one test."""
    if db_kind == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "server.sqlite"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_database_url")
    clear_tables(url)
    return url
