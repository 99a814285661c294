"""Which database errors mean "the database is unavailable" (retry later) rather than a bug.

A request that fails because the database is down, stalled, out of connections, out of
disk or read-only is answered 503 database_unavailable with Retry-After; any other
database error stays an internal error (500).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa_exc

from tdx_boot_attest.server.errors import DatabaseUnavailable

# SQLSTATE classes: 08 connection exception, 53 insufficient resources (disk full, out of
# memory, too many connections), 57 operator intervention (statement timeout, admin
# shutdown, terminated backend), 58 system error (I/O).
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "58"})
# Read-only transaction (a standby after failover), serialization failure, deadlock,
# lock not available.
_UNAVAILABLE_SQLSTATES = frozenset({"25006", "40001", "40P01", "55P03"})
_UNAVAILABLE_SQLITE_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_INTERRUPT,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)
DETAIL_MAX_CHARS = 160
LOG = logging.getLogger("tdx_attest.database")


def unavailability(exc: BaseException) -> str | None:
    """A short description when ``exc`` means the database is unavailable, else None.

    Raises nothing.
    """
    if isinstance(exc, DatabaseUnavailable):
        return exc.message
    if isinstance(exc, sa_exc.TimeoutError):
        return "no database connection became free in time"
    if isinstance(exc, sa_exc.DisconnectionError):
        return "the database connection was lost"
    original: BaseException | None = exc
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return _describe(exc.orig)
        original = exc.orig
    if original is None:
        return None
    if isinstance(original, sqlite3.Error):
        code = getattr(original, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _UNAVAILABLE_SQLITE_CODES:
            return _describe(original)
        return None
    return _psycopg_unavailability(original)


def _psycopg_unavailability(exc: BaseException) -> str | None:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a server dependency
        return None
    if not isinstance(exc, psycopg.Error):
        return None
    sqlstate = exc.sqlstate
    if sqlstate is None:
        # No SQLSTATE: the driver's own failure (refused, timed out, connection lost).
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            return _describe(exc)
        return None
    if sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES or sqlstate in _UNAVAILABLE_SQLSTATES:
        return _describe(exc)
    return None


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "the database connection was lost"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text[:DETAIL_MAX_CHARS]


@contextmanager
def unavailable_as_503(retry_after: int) -> Iterator[None]:
    """Turn a database-unavailable error raised inside into DatabaseUnavailable.

    Other errors pass unchanged. Raises DatabaseUnavailable.
    """
    try:
        yield
    except DatabaseUnavailable:
        raise
    except Exception as exc:
        refusal = as_unavailable(exc, retry_after)
        if refusal is None:
            raise
        raise refusal from exc


def as_unavailable(exc: BaseException, retry_after: int) -> DatabaseUnavailable | None:
    """The 503 for ``exc`` when it means the database is unavailable, else None.

    The driver's description (which can name hosts and ports) goes to the server log;
    the client's message only says what happened. Raises nothing.
    """
    if isinstance(exc, DatabaseUnavailable):
        return exc
    description = unavailability(exc)
    if description is None:
        return None
    LOG.warning("database unavailable: %s", description)
    return database_unavailable(retry_after)


def database_unavailable(retry_after: int) -> DatabaseUnavailable:
    """The 503 a client gets when the database cannot serve it. Raises nothing."""
    return DatabaseUnavailable(
        f"the database is unavailable (not answering, unreachable, or unable to write); "
        f"retry in {retry_after} s",
        retry_after,
    )


class DatabaseGate:
    """Fails requests at once while the database keeps them waiting, instead of queueing.

    When a request failed because the database did not answer for at least
    ``slow_failure_seconds`` (stalled, unreachable), the gate closes: until a request
    succeeds again, one request per ``probe_interval_seconds`` goes through to find out,
    and the others are answered database_unavailable without waiting for a worker or a
    connection. Fast failures (a refused connection, a full disk) leave it open: they do
    not hold workers. Thread-safe.
    """

    def __init__(
        self,
        *,
        slow_failure_seconds: float = 1.0,
        probe_interval_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._slow = slow_failure_seconds
        self._interval = probe_interval_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        self._next_probe = 0.0

    @property
    def closed(self) -> bool:
        """True while requests are being failed fast. Raises nothing."""
        return self._closed

    def admit(self) -> bool:
        """True when this request may use the database (open, or it is the probe)."""
        if not self._closed:
            return True
        with self._lock:
            now = self._clock()
            if now < self._next_probe:
                return False
            self._next_probe = now + self._interval
            return True

    def failed(self, waited_seconds: float) -> None:
        """A request found the database unavailable after waiting ``waited_seconds``."""
        if waited_seconds < self._slow:
            return
        with self._lock:
            if not self._closed:
                LOG.warning("the database keeps requests waiting: failing them fast")
            self._closed = True
            self._next_probe = self._clock() + self._interval

    def succeeded(self) -> None:
        """A request was served by the database. Raises nothing."""
        if self._closed:
            with self._lock:
                self._closed = False
            LOG.warning("the database answers again")
