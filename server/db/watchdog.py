"""A deadline on every checked-out database connection, enforced by cutting the connection.

PostgreSQL's own statement_timeout cannot help when the database (or the path to it)
stops answering altogether: the client then waits on its socket for ever. The engine arms
this watchdog when a connection is checked out of the pool and disarms it when the
connection goes back; a connection still out at its deadline is cut (its socket shut
down, or an SQLite query interrupted), so the waiting call fails at once and the request
is answered database_unavailable instead of hanging.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

LOG = logging.getLogger("tdx_attest.database")
Cut = Callable[[], None]


@dataclass(slots=True)
class _Armed:
    deadline: float
    cut: Cut
    release: Cut | None


class ConnectionWatchdog:
    """Cuts connections held past ``limit_seconds``; one daemon thread, started on first use."""

    def __init__(self, limit_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit_seconds = limit_seconds
        self._clock = clock
        self._armed: dict[object, _Armed] = {}
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self.cuts = 0

    def arm(self, key: object, cut: Cut, release: Cut | None = None) -> None:
        """Start the deadline of ``key``: at it, ``cut`` is called (once), unless disarmed.

        ``release`` (if given) is called when the entry ends, cut or not, to free what
        ``cut`` holds. Raises nothing.
        """
        with self._condition:
            previous = self._armed.pop(key, None)
            idle = not self._armed
            self._armed[key] = _Armed(self._clock() + self.limit_seconds, cut, release)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="database-watchdog", daemon=True
                )
                self._thread.start()
            # Every deadline is later than those already armed (one limit for all), so the
            # watchdog needs waking only when it had nothing to wait for.
            if idle:
                self._condition.notify()
        if previous is not None and previous.release is not None:
            previous.release()

    def disarm(self, key: object) -> None:
        """End the deadline of ``key`` (it is back in the pool, or closed). Raises nothing."""
        with self._condition:
            entry = self._armed.pop(key, None)
        if entry is not None and entry.release is not None:
            entry.release()

    def _run(self) -> None:
        while True:
            with self._condition:
                now = self._clock()
                due = [key for key, entry in self._armed.items() if entry.deadline <= now]
                if not due:
                    upcoming = min((e.deadline for e in self._armed.values()), default=None)
                    self._condition.wait(None if upcoming is None else upcoming - now)
                    continue
                # Cut under the lock: a connection being returned (disarm) waits for its
                # cut, so a cut never reaches the connection's next user.
                for key in due:
                    self._cut(self._armed.pop(key))

    def _cut(self, entry: _Armed) -> None:
        self.cuts += 1
        LOG.warning("a database connection was held over %.1f s: cutting it", self.limit_seconds)
        try:
            entry.cut()
        except Exception:
            # A connection already closed: nothing is left to cut.
            LOG.debug("cutting a database connection failed", exc_info=True)
        finally:
            if entry.release is not None:
                entry.release()
