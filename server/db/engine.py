"""Engines and sessions: SQLite (WAL, foreign keys, busy timeout) or PostgreSQL via psycopg 3.

Every engine bounds how long a request can wait on the database: connecting (connect
timeout), each statement (PostgreSQL statement_timeout), a free pooled connection (pool
timeout) and, whatever the database does, each checkout of a connection (the watchdog
cuts a connection held past the statement timeout). A pooled PostgreSQL connection the
database has closed (a terminated backend, a restart) is noticed at checkout without a
round trip and replaced.
"""

from __future__ import annotations

import math
import os
import select
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from tdx_boot_attest.server.db.watchdog import ConnectionWatchdog
from tdx_boot_attest.server.errors import ConfigurationError

APPLICATION_NAME = "tdx-attest-server"
# libpq (and psycopg) never wait less than this for a connection.
MIN_PG_CONNECT_TIMEOUT = 2
# poll() events that mean an idle connection is no longer usable: the peer closed it (or
# sent something unasked, such as a FATAL message before closing).
_CLOSED_EVENTS = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP


@dataclass(frozen=True, slots=True)
class DatabaseLimits:
    """How long a request may wait on the database (settings database_*_seconds)."""

    connect_timeout_seconds: float = 3.0
    statement_timeout_seconds: float = 5.0
    pool_timeout_seconds: float = 5.0


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


def make_engine(url: str, *, pool_size: int = 10, limits: DatabaseLimits | None = None) -> Engine:
    """An engine for ``url`` configured for this server's access pattern and ``limits``.

    Raises ConfigurationError for an unsupported URL.
    """
    limits = limits or DatabaseLimits()
    normalised = normalise_url(url)
    parsed = make_url(normalised)
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {"pool_timeout": limits.pool_timeout_seconds}
    if backend == "sqlite":
        kwargs["connect_args"] = {
            "check_same_thread": False,
            "timeout": limits.statement_timeout_seconds,
        }
        if ":memory:" in normalised or normalised.rstrip("/").endswith("sqlite:"):
            raise ConfigurationError("an in-memory SQLite database cannot be shared; use a file")
    else:
        kwargs["pool_size"] = pool_size
        kwargs["max_overflow"] = pool_size * 2
        kwargs["pool_recycle"] = 1800
        kwargs["connect_args"] = _postgres_connect_args(parsed.query, limits)
    engine = create_engine(normalised, **kwargs)
    if backend == "sqlite":
        busy_ms = math.ceil(limits.statement_timeout_seconds * 1000)
        event.listen(engine, "connect", partial(_sqlite_on_connect, busy_ms))
        event.listen(engine, "begin", _sqlite_on_begin)
    watchdog = ConnectionWatchdog(limits.statement_timeout_seconds)
    event.listen(engine, "checkout", partial(_on_checkout, watchdog, backend == "sqlite"))
    for name in ("checkin", "close", "detach"):
        event.listen(engine, name, partial(_disarm, watchdog))
    event.listen(engine, "invalidate", partial(_disarm_invalidated, watchdog))
    return engine


def _postgres_connect_args(query: Any, limits: DatabaseLimits) -> dict[str, Any]:
    statement_ms = math.ceil(limits.statement_timeout_seconds * 1000)
    options = (
        f"-c statement_timeout={statement_ms} "
        # A session left inside a transaction (a client that stopped) does not hold its
        # locks for long either.
        f"-c idle_in_transaction_session_timeout={2 * statement_ms}"
    )
    if query.get("options"):
        options = f"{query['options']} {options}"
    connect_args: dict[str, Any] = {
        "connect_timeout": max(MIN_PG_CONNECT_TIMEOUT, math.ceil(limits.connect_timeout_seconds)),
        "options": options,
    }
    if "application_name" not in query:
        connect_args["application_name"] = APPLICATION_NAME
    return connect_args


def _on_checkout(
    watchdog: ConnectionWatchdog, is_sqlite: bool, dbapi_connection: Any, record: Any, _proxy: Any
) -> None:
    if is_sqlite:
        watchdog.arm(record, dbapi_connection.interrupt)
        return
    fd = dbapi_connection.pgconn.socket
    if _peer_closed(fd):
        # The pool discards this connection and checks out a fresh one.
        raise DisconnectionError("the database closed this pooled connection")
    # A duplicate of the socket: cutting it reaches this connection even if the
    # connection's own descriptor has been closed and its number reused meanwhile.
    handle = socket.socket(fileno=os.dup(fd))
    watchdog.arm(record, partial(_shut_down, handle), handle.close)


def _peer_closed(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, _CLOSED_EVENTS)
    return bool(poller.poll(0))


def _shut_down(handle: socket.socket) -> None:
    handle.shutdown(socket.SHUT_RDWR)


def _disarm(watchdog: ConnectionWatchdog, _dbapi_connection: Any, record: Any) -> None:
    watchdog.disarm(record)


def _disarm_invalidated(
    watchdog: ConnectionWatchdog, _dbapi_connection: Any, record: Any, _exception: Any
) -> None:
    watchdog.disarm(record)


def _sqlite_on_connect(busy_timeout_ms: int, dbapi_connection: Any, _record: Any) -> None:
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
    cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
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
