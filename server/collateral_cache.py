"""The collateral cache: database rows shared by replicas, a short in-process copy, refresh.

Collateral is reused until ``refresh_margin`` before its nextUpdate, then refetched; if the
service is down the cached copy keeps serving until it expires, and never after.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

import dcap_qvl
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from server.collateral import Collateral, CollateralError, CollateralFetcher, parse_collateral
from server.db.engine import session_scope
from server.db.models import CollateralCacheEntry
from server.errors import CollateralUnavailable

LOG = logging.getLogger("tdx_attest.collateral")
# How long a process trusts its in-memory copy before looking at the shared row again
# (another replica may have refreshed it, or an operator imported new collateral).
LOCAL_RECHECK = timedelta(seconds=10)


@dataclass(slots=True)
class _Local:
    collateral: Collateral
    dcap: dcap_qvl.QuoteCollateralV3
    checked_at: datetime


class CollateralCache:
    """Hands out valid collateral for (FMSPC, CA), fetching and caching as needed."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        fetcher: CollateralFetcher | None,
        *,
        refresh_margin: timedelta,
        retry_after_seconds: int,
    ) -> None:
        self._sessions = sessions
        self._fetcher = fetcher
        self._margin = refresh_margin
        self._retry_after = retry_after_seconds
        self._local: dict[tuple[str, str], _Local] = {}
        self._failed_at: dict[tuple[str, str], datetime] = {}
        self._lock = threading.Lock()

    def get_cached(
        self, fmspc: str, ca: str, now: datetime
    ) -> tuple[Collateral, dcap_qvl.QuoteCollateralV3] | None:
        """Collateral for the platform if a copy is held and not yet due for refresh.

        Never fetches over the network (reads the shared row at most every few seconds).
        Raises SQLAlchemy errors.
        """
        key = (fmspc.lower(), ca)
        local = self._local.get(key)
        if local is None or now - local.checked_at > LOCAL_RECHECK:
            local = self._load_row(key, now)
        if local is not None and local.collateral.issued_at <= now < self._refresh_at(local):
            return local.collateral, local.dcap
        return None

    def _refresh_at(self, local: _Local) -> datetime:
        return local.collateral.next_update - self._margin

    def get(
        self, fmspc: str, ca: str, now: datetime
    ) -> tuple[Collateral, dcap_qvl.QuoteCollateralV3]:
        """Collateral valid at ``now`` for the platform.

        Raises CollateralUnavailable when none is cached and valid and none can be fetched.
        """
        key = (fmspc.lower(), ca)
        local = self._local.get(key)
        if (
            local is None
            or now - local.checked_at > LOCAL_RECHECK
            or not local.collateral.valid_at(now)
        ):
            local = self._load_row(key, now)
        if local is not None and now < local.collateral.next_update - self._margin:
            return local.collateral, local.dcap
        with self._lock:
            refreshed = self._refresh(key, now, local)
        if refreshed is not None:
            return refreshed.collateral, refreshed.dcap
        if local is not None and local.collateral.valid_at(now):
            return local.collateral, local.dcap
        raise CollateralUnavailable(
            f"no valid collateral for FMSPC {key[0]} ({key[1]} CA) and the collateral "
            "service cannot provide it",
            retry_after=self._retry_after,
        )

    @property
    def refresh_margin(self) -> timedelta:
        """How long before its nextUpdate collateral is refetched. Raises nothing."""
        return self._margin

    def held(self) -> list[Collateral]:
        """The collateral this process holds in memory (no database access). Raises nothing."""
        return [local.collateral for local in list(self._local.values())]

    def entries(self) -> list[CollateralCacheEntry]:
        """Every cached row (for metrics and the admin CLI). Raises SQLAlchemy errors."""
        with session_scope(self._sessions) as session:
            return list(session.scalars(select(CollateralCacheEntry)))

    def _load_row(self, key: tuple[str, str], now: datetime) -> _Local | None:
        with session_scope(self._sessions) as session:
            row = session.get(CollateralCacheEntry, key)
            text = row.collateral_json if row is not None else None
        if text is None:
            self._local.pop(key, None)
            return None
        current = self._local.get(key)
        if current is not None and current.collateral.json_text == text:
            current.checked_at = now
            return current
        try:
            collateral = parse_collateral(text)
            local = _Local(collateral, collateral.for_dcap(), now)
        except CollateralError:
            return None
        self._local[key] = local
        return local

    def _refresh(
        self, key: tuple[str, str], now: datetime, current: _Local | None
    ) -> _Local | None:
        if self._fetcher is None:
            return None
        failed_at = self._failed_at.get(key)
        if failed_at is not None and now - failed_at < timedelta(seconds=self._retry_after):
            return None
        try:
            collateral = parse_collateral(self._fetcher(key[0], key[1]))
            if collateral.fmspc != key[0]:
                raise CollateralError(
                    f"collateral service sent TCB info for FMSPC {collateral.fmspc}, not {key[0]}"
                )
            if not collateral.valid_at(now):
                raise CollateralError("collateral service sent collateral not valid now")
            local = _Local(collateral, collateral.for_dcap(), now)
        except CollateralError as exc:
            LOG.warning("collateral fetch for FMSPC %s (%s CA) failed: %s", key[0], key[1], exc)
            self._failed_at[key] = now
            return None
        if current is not None and current.collateral.next_update > collateral.next_update:
            return current
        try:
            with session_scope(self._sessions) as session:
                _upsert(session, collateral, now, "fetched", ca=key[1])
        except IntegrityError:
            # Another replica inserted the row first; its copy is as good as ours.
            LOG.info("collateral for FMSPC %s was stored by another replica", key[0])
        self._failed_at.pop(key, None)
        self._local[key] = local
        return local


def _upsert(
    session: Session, collateral: Collateral, now: datetime, source: str, ca: str | None = None
) -> None:
    key = (collateral.fmspc, ca or collateral.ca)
    row = session.get(CollateralCacheEntry, key, with_for_update=True)
    if row is None:
        row = CollateralCacheEntry(fmspc=key[0], ca=key[1])
        session.add(row)
    row.collateral_json = collateral.json_text
    row.issued_at = collateral.issued_at
    row.next_update = collateral.next_update
    row.fetched_at = now
    row.source = source


def import_collateral(sessions: sessionmaker[Session], text: str, now: datetime) -> Collateral:
    """Validate and store collateral from a file (air-gapped sites).

    Raises CollateralError when the document is unusable.
    """
    collateral = parse_collateral(text)
    collateral.for_dcap()
    with session_scope(sessions) as session:
        _upsert(session, collateral, now, "imported")
    return collateral
