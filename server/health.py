"""Readiness: can this process serve attestations now (database), and what collateral it has.

Liveness (/healthz) needs nothing but a running event loop. Readiness (/readyz) asks the
database, on a worker thread and for at most READINESS_WAIT_SECONDS: a probe that does
not finish in time counts as "unavailable" (the watchdog ends it later), and at most one
probe runs at a time however many callers ask.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from tdx_boot_attest.server.clock import rfc3339
from tdx_boot_attest.server.collateral import Collateral
from tdx_boot_attest.server.context import ServerContext
from tdx_boot_attest.server.db.availability import unavailability
from tdx_boot_attest.server.db.engine import session_scope
from tdx_boot_attest.server.db.models import CollateralCacheEntry

LOG = logging.getLogger("tdx_attest.server")
READINESS_WAIT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class CollateralState:
    """One cached collateral set as readiness reports it."""

    fmspc: str
    ca: str
    next_update: datetime
    state: str  # "valid", "refresh_due" or "expired"

    def to_json(self) -> dict[str, str]:
        """The JSON form of the report. Raises nothing."""
        return {
            "fmspc": self.fmspc,
            "ca": self.ca,
            "next_update": rfc3339(self.next_update),
            "state": self.state,
        }


class Readiness:
    """Answers /readyz for one process."""

    def __init__(self, ctx: ServerContext) -> None:
        self._ctx = ctx
        self._probe: asyncio.Future[list[CollateralState]] | None = None

    async def report(self) -> tuple[bool, dict[str, Any]]:
        """(ready, body). Ready means the database answered just now. Raises nothing."""
        probe = self._probe
        if probe is None or probe.done():
            probe = self._probe = asyncio.ensure_future(run_in_threadpool(self._read_database))
        database: dict[str, str]
        try:
            collateral = await asyncio.wait_for(
                asyncio.shield(probe), timeout=READINESS_WAIT_SECONDS
            )
            database = {"state": "ok"}
            # The database answers: attestations need not be failed fast any more.
            self._ctx.database_gate.succeeded()
        except TimeoutError:
            database = {"state": "unavailable", "detail": "the database did not answer in time"}
            collateral = self._held()
        except Exception as exc:
            detail = unavailability(exc) or type(exc).__name__
            LOG.warning("readiness probe: database unavailable: %s", detail)
            database = {"state": "unavailable", "detail": "the database refused or failed"}
            collateral = self._held()
        ready = database["state"] == "ok"
        body = {
            "status": "ready" if ready else "not_ready",
            "database": database,
            "collateral": [entry.to_json() for entry in collateral],
        }
        return ready, body

    def _held(self) -> list[CollateralState]:
        now = self._ctx.clock()
        margin = self._ctx.collateral.refresh_margin
        return [state_of(held, now, margin) for held in self._ctx.collateral.held()]

    def _read_database(self) -> list[CollateralState]:
        now = self._ctx.clock()
        margin = self._ctx.collateral.refresh_margin
        with session_scope(self._ctx.sessions) as session:
            rows = list(session.scalars(select(CollateralCacheEntry)))
        return [
            collateral_state(
                row.fmspc, row.ca, (row.issued_at, row.next_update), now=now, margin=margin
            )
            for row in rows
        ]


def collateral_state(
    fmspc: str,
    ca: str,
    window: tuple[datetime, datetime],
    *,
    now: datetime,
    margin: timedelta,
) -> CollateralState:
    """How a cached set stands at ``now``. Raises nothing."""
    issued_at, next_update = window
    if not issued_at <= now < next_update:
        state = "expired"
    elif now >= next_update - margin:
        state = "refresh_due"
    else:
        state = "valid"
    return CollateralState(fmspc, ca, next_update, state)


def state_of(collateral: Collateral, now: datetime, margin: timedelta) -> CollateralState:
    """collateral_state for a parsed collateral set. Raises nothing."""
    window = (collateral.issued_at, collateral.next_update)
    return collateral_state(collateral.fmspc, collateral.ca, window, now=now, margin=margin)
