"""Engines and sessions: SQLite (WAL, foreign keys, busy timeout) or PostgreSQL via psycopg 3."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from server.errors import ConfigurationError

SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalise_url(url: str) -> str:
    """Map ``postgresql://`` URLs to the psycopg 3 driver; raises ConfigurationError."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigurationError("database_url is not a valid database URL") from None
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in {"sqlite", "postgresql"}:
        raise ConfigurationError("database_url must be a sqlite:// or postgresql:// URL")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine for ``url`` configured for this server's access pattern.

    Raises ConfigurationError for an unsupported URL.
    """
    normalised = normalise_url(url)
    backend = make_url(normalised).get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        kwargs["connect_args"] = {
            "check_same_thread": False,
            "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
        }
        if ":memory:" in normalised or normalised.rstrip("/").endswith("sqlite:"):
            raise ConfigurationError("an in-memory SQLite database cannot be shared; use a file")
    else:
        kwargs["pool_size"] = pool_size
        kwargs["max_overflow"] = pool_size * 2
        kwargs["pool_recycle"] = 1800
    engine = create_engine(normalised, **kwargs)
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # The stdlib driver's own transaction handling would skip BEGIN before reads, so
    # the "begin" hook issues it and every unit of work is one real transaction.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Under WAL, NORMAL skips the fsync on every commit (it syncs at checkpoints): a power
    # loss can lose the last commits but never corrupts the database. A lost nonce or audit
    # row fails closed (the agent retries with a new nonce); FULL would cost an fsync per
    # statement on the boot path.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _sqlite_on_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit. Raises nothing."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session committed on success and rolled back on any exception (which propagates)."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
