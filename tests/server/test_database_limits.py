"""Bounded waits on the database: the watchdog, and which errors mean "unavailable"."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from tdx_boot_attest.server.db.availability import as_unavailable, unavailability
from tdx_boot_attest.server.db.engine import DatabaseLimits, make_engine
from tdx_boot_attest.server.db.watchdog import ConnectionWatchdog
from tdx_boot_attest.server.errors import DatabaseUnavailable
from tdx_boot_attest.server.settings import Settings

# A query that never ends by itself: only an interrupt stops it.
ENDLESS = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT max(i) FROM n"


def test_watchdog_cuts_a_connection_held_past_its_deadline() -> None:
    watchdog = ConnectionWatchdog(0.05)
    cut, released = threading.Event(), threading.Event()
    watchdog.arm("connection", cut.set, released.set)
    assert cut.wait(60) and released.wait(60)
    assert watchdog.cuts == 1


def test_watchdog_leaves_a_connection_returned_in_time() -> None:
    watchdog = ConnectionWatchdog(3600)
    released = threading.Event()
    watchdog.arm("connection", lambda: pytest.fail("cut"), released.set)
    watchdog.disarm("connection")
    assert released.is_set()
    assert watchdog.cuts == 0


def test_sqlite_statement_past_the_limit_is_interrupted(tmp_path: Path) -> None:
    engine = make_engine(
        f"sqlite:///{tmp_path / 'db.sqlite'}", limits=DatabaseLimits(statement_timeout_seconds=0.2)
    )
    try:
        with pytest.raises(sa.exc.OperationalError) as caught, engine.connect() as conn:
            conn.exec_driver_sql(ENDLESS).scalar()
        assert unavailability(caught.value) is not None
        # The pool still works afterwards.
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        engine.dispose()


def test_sqlite_disk_full_is_unavailability(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "full.sqlite")
    connection.execute("PRAGMA max_page_count = 1")
    with pytest.raises(sqlite3.OperationalError) as caught:
        connection.execute("CREATE TABLE t (x TEXT)")
        connection.executemany("INSERT INTO t VALUES (?)", [("x" * 4096,)] * 10)
    connection.close()
    assert caught.value.sqlite_errorcode == sqlite3.SQLITE_FULL
    assert unavailability(caught.value) is not None


def test_sqlite_programming_errors_stay_internal(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "db.sqlite")
    with pytest.raises(sqlite3.OperationalError) as caught:
        connection.execute("SELECT nope FROM nowhere")
    connection.close()
    assert unavailability(caught.value) is None


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.DiskFull("could not extend file"),
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
        psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"),
        psycopg.errors.TooManyConnections("too many connections"),
        psycopg.OperationalError("connection failed: Connection refused"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_postgres_unavailability(error: psycopg.Error) -> None:
    refusal = as_unavailable(error, retry_after=7)
    assert isinstance(refusal, DatabaseUnavailable)
    assert refusal.status_code == 503
    assert refusal.headers == {"Retry-After": "7"}
    # The driver's text (hosts, ports) stays in the server log.
    assert str(error) not in refusal.message


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.UniqueViolation("duplicate key"),
        psycopg.errors.UndefinedTable("relation does not exist"),
        ValueError("not a database error"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_other_errors_are_not_unavailability(error: Exception) -> None:
    assert as_unavailable(error, retry_after=7) is None


@pytest.mark.parametrize(
    "name",
    [
        "database_connect_timeout_seconds",
        "database_statement_timeout_seconds",
        "database_pool_timeout_seconds",
        "database_retry_after_seconds",
        "bookkeeping_max_fields",
        "bookkeeping_max_bytes",
    ],
)
def test_limits_must_be_positive(name: str) -> None:
    from tdx_boot_attest.server.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=name):
        Settings.load(environ={f"TDX_ATTEST_{name.upper()}": "0"})
