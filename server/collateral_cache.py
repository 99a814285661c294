"""The collateral cache: database rows shared by replicas, a short in-process copy, refresh.

Collateral is reused until ``refresh_margin`` before its nextUpdate; then one refresh per
(FMSPC, CA) runs in the background while attestations go on using the still-valid copy.
Only when no valid copy exists does an attestation wait for a fetch, at most the fetch's
own deadline, joining the one already in flight. If the service is down the cached copy
keeps serving until it expires, and never after. A platform the service does not know
(404) is not asked about again for ``unknown_platform_seconds``.
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

from tdx_boot_attest.server.collateral import (
    Collateral,
    CollateralError,
    CollateralFetcher,
    CollateralNotFound,
    parse_collateral,
)
from tdx_boot_attest.server.db.engine import session_scope
from tdx_boot_attest.server.db.models import CollateralCacheEntry
from tdx_boot_attest.server.errors import CollateralUnavailable
from tdx_boot_attest.server.metrics import Metrics

LOG = logging.getLogger("tdx_attest.collateral")
# How long a process trusts its in-memory copy before looking at the shared row again
# (another replica may have refreshed it, or an operator imported new collateral).
LOCAL_RECHECK = timedelta(seconds=10)
# A waiting attestation gives a fetch this long beyond the fetch's own deadline (the
# fetch thread still has to parse and store what it got).
WAIT_GRACE_SECONDS = 5.0
# Platforms remembered as unknown to the service; the oldest are forgotten first.
MAX_UNKNOWN_PLATFORMS = 10_000
Key = tuple[str, str]
_DONE = threading.Event()
_DONE.set()


@dataclass(slots=True)
class _Local:
    collateral: Collateral
    dcap: dcap_qvl.QuoteCollateralV3
    checked_at: datetime


@dataclass(frozen=True, slots=True)
class CollateralPolicy:
    """When to refresh, how long to wait for and between fetches (settings collateral_*)."""

    refresh_margin: timedelta
    retry_after_seconds: int
    fetch_timeout_seconds: float = 10.0
    unknown_platform_seconds: int = 600


class CollateralCache:
    """Hands out valid collateral for (FMSPC, CA), fetching and caching as needed."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        fetcher: CollateralFetcher | None,
        policy: CollateralPolicy,
        metrics: Metrics | None = None,
    ) -> None:
        self._sessions = sessions
        self._fetcher = fetcher
        self._policy = policy
        self._metrics = metrics or Metrics()
        self._local: dict[Key, _Local] = {}
        self._failed_at: dict[Key, datetime] = {}
        self._unknown_until: dict[Key, datetime] = {}
        self._in_flight: dict[Key, threading.Event] = {}
        self._lock = threading.Lock()

    @property
    def refresh_margin(self) -> timedelta:
        """How long before its nextUpdate collateral is refetched. Raises nothing."""
        return self._policy.refresh_margin

    def held(self) -> list[Collateral]:
        """The collateral this process holds in memory (no database access). Raises nothing."""
        return [local.collateral for local in list(self._local.values())]

    def get(
        self, fmspc: str, ca: str, now: datetime
    ) -> tuple[Collateral, dcap_qvl.QuoteCollateralV3]:
        """Collateral valid at ``now`` for the platform. Blocking: call it on a worker thread.

        Raises CollateralUnavailable when none is cached and valid and none can be
        fetched within the fetch deadline; SQLAlchemy errors if the database fails.
        """
        key = (fmspc.lower(), ca)
        local = self._current(key, now)
        if local is not None and local.collateral.valid_at(now):
            if now >= local.collateral.next_update - self._policy.refresh_margin:
                # Due for refresh: fetched in the background, this copy serves meanwhile.
                self._start_refresh(key, now, local)
            return local.collateral, local.dcap
        unknown_until = self._unknown_until.get(key)
        if unknown_until is not None and now < unknown_until:
            raise self._unavailable(key, "the collateral service does not know this platform")
        refresh = self._start_refresh(key, now, local)
        if refresh is not None:
            refresh.wait(self._policy.fetch_timeout_seconds + WAIT_GRACE_SECONDS)
        fetched = self._local.get(key)
        if fetched is not None and fetched.collateral.valid_at(now):
            return fetched.collateral, fetched.dcap
        raise self._unavailable(key, "the collateral service cannot provide it")

    def wait_for_refreshes(self, timeout: float) -> bool:
        """Wait until no refresh is in flight (tests, shutdown); False on timeout."""
        with self._lock:
            pending = list(self._in_flight.values())
        return all(event.wait(timeout) for event in pending)

    def entries(self) -> list[CollateralCacheEntry]:
        """Every cached row (for metrics and the admin CLI). Raises SQLAlchemy errors."""
        with session_scope(self._sessions) as session:
            return list(session.scalars(select(CollateralCacheEntry)))

    def _unavailable(self, key: Key, why: str) -> CollateralUnavailable:
        return CollateralUnavailable(
            f"no valid collateral for FMSPC {key[0]} ({key[1]} CA) and {why}",
            retry_after=self._policy.retry_after_seconds,
        )

    def _current(self, key: Key, now: datetime) -> _Local | None:
        local = self._local.get(key)
        if (
            local is None
            or now - local.checked_at > LOCAL_RECHECK
            or not local.collateral.valid_at(now)
        ):
            local = self._load_row(key, now)
        return local

    def _load_row(self, key: Key, now: datetime) -> _Local | None:
        before = self._local.get(key)
        with session_scope(self._sessions) as session:
            row = session.get(CollateralCacheEntry, key)
            text = row.collateral_json if row is not None else None
        with self._lock:
            # A refresh may have stored a newer copy while the row was being read.
            current = self._local.get(key)
            if text is None:
                if current is before:
                    self._local.pop(key, None)
                    return None
                return current
            if current is not None and current.collateral.json_text == text:
                current.checked_at = now
                return current
        try:
            collateral = parse_collateral(text)
            local = _Local(collateral, collateral.for_dcap(), now)
        except CollateralError:
            return None
        with self._lock:
            current = self._local.get(key)
            if current is None or current.collateral.next_update <= collateral.next_update:
                self._local[key] = local
                return local
            return current

    def _start_refresh(
        self, key: Key, now: datetime, current: _Local | None
    ) -> threading.Event | None:
        """The event set when the refresh of ``key`` ends (a new one, or the one in flight).

        None when no fetch is to be made: no fetcher, or a failure too recent to retry.
        """
        if self._fetcher is None:
            return None
        with self._lock:
            running = self._in_flight.get(key)
            if running is not None:
                return running
            latest = self._local.get(key)
            if latest is not None and latest is not current and self._fresh(latest, now):
                # A refresh ended since the caller looked: nothing to fetch.
                return _DONE
            failed_at = self._failed_at.get(key)
            retry = timedelta(seconds=self._policy.retry_after_seconds)
            if failed_at is not None and now - failed_at < retry:
                return None
            done = self._in_flight[key] = threading.Event()
        thread = threading.Thread(
            target=self._refresh,
            args=(key, now, current, done),
            name=f"collateral-{key[0]}-{key[1]}",
            daemon=True,
        )
        thread.start()
        return done

    def _fresh(self, local: _Local, now: datetime) -> bool:
        collateral = local.collateral
        return (
            collateral.valid_at(now) and now < collateral.next_update - self._policy.refresh_margin
        )

    def _refresh(
        self, key: Key, now: datetime, current: _Local | None, done: threading.Event
    ) -> None:
        self._metrics.collateral_fetches_in_flight.inc()
        result = "failed"
        try:
            result = self._fetch_and_store(key, now, current)
        except Exception:
            LOG.exception("collateral refresh for FMSPC %s (%s CA) failed", key[0], key[1])
            self._failed_at[key] = now
        finally:
            with self._lock:
                self._in_flight.pop(key, None)
            self._metrics.collateral_fetches.labels(result).inc()
            self._metrics.collateral_fetches_in_flight.dec()
            done.set()

    def _fetch_and_store(self, key: Key, now: datetime, current: _Local | None) -> str:
        """Fetch, check and store; returns the result label of the fetch metric."""
        fetcher = self._fetcher
        if fetcher is None:
            return "failed"
        try:
            collateral = parse_collateral(fetcher(key[0], key[1]))
            if collateral.fmspc != key[0]:
                raise CollateralError(
                    f"collateral service sent TCB info for FMSPC {collateral.fmspc}, not {key[0]}"
                )
            if not collateral.valid_at(now):
                raise CollateralError("collateral service sent collateral not valid now")
            local = _Local(collateral, collateral.for_dcap(), now)
        except CollateralNotFound as exc:
            LOG.warning("collateral for FMSPC %s (%s CA): %s", key[0], key[1], exc)
            self._remember_unknown(key, now)
            return "unknown_platform"
        except CollateralError as exc:
            LOG.warning("collateral fetch for FMSPC %s (%s CA) failed: %s", key[0], key[1], exc)
            self._failed_at[key] = now
            return "failed"
        if current is not None and current.collateral.next_update > collateral.next_update:
            return "fetched"
        try:
            with session_scope(self._sessions) as session:
                _upsert(session, collateral, now, "fetched", ca=key[1])
        except IntegrityError:
            # Another replica inserted the row first; its copy is as good as ours.
            LOG.info("collateral for FMSPC %s was stored by another replica", key[0])
        self._failed_at.pop(key, None)
        with self._lock:
            self._local[key] = local
        return "fetched"

    def _remember_unknown(self, key: Key, now: datetime) -> None:
        with self._lock:
            if len(self._unknown_until) >= MAX_UNKNOWN_PLATFORMS:
                oldest = min(self._unknown_until, key=self._unknown_until.__getitem__)
                del self._unknown_until[oldest]
            self._unknown_until[key] = now + timedelta(
                seconds=self._policy.unknown_platform_seconds
            )


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
