"""Registered miners and their API tokens, the signature replay store, in the database.

These implement :class:`server.auth.MinerLookup` and :class:`server.auth.ReplayGuard`
and the admin operations behind ``tdx-attest-server miner ...``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tdx_boot_attest.server.auth.errors import AuthenticationError
from tdx_boot_attest.server.auth.hotkey import hotkey_public_key
from tdx_boot_attest.server.auth.tokens import new_token, token_digest
from tdx_boot_attest.server.clock import Clock
from tdx_boot_attest.server.db.engine import session_scope
from tdx_boot_attest.server.db.fleet import Miner, MinerToken, Server, UsedSignature
from tdx_boot_attest.server.errors import Conflict, NotFound, RequestInvalid

# Expired replay records are swept at most this often per process.
REPLAY_PURGE_INTERVAL = timedelta(minutes=1)


class DatabaseMiners:
    """Miner and token lookups over one session (implements MinerLookup)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def is_registered(self, hotkey: str) -> bool:
        """True when ``hotkey`` is a registered miner. Raises SQLAlchemy errors."""
        return self._session.get(Miner, hotkey) is not None

    def hotkey_for_token_digest(self, digest: str) -> tuple[str, str] | None:
        """``(hotkey, stored digest)`` of the token with ``digest``. Raises SQLAlchemy errors."""
        row = self._session.execute(
            select(MinerToken.miner_hotkey, MinerToken.token_sha256).where(
                MinerToken.token_sha256 == digest
            )
        ).first()
        return None if row is None else (row.miner_hotkey, row.token_sha256)


class DatabaseReplayGuard:
    """Accepts each signature once across every replica (implements ReplayGuard).

    Each claim commits in its own transaction, so a signature stays spent even when the
    request it authenticated later fails.
    """

    def __init__(self, sessions: sessionmaker[Session], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock
        self._last_purge: datetime | None = None

    def claim(self, signature_digest: str, hotkey: str, expires_at: datetime) -> bool:
        """Record the signature; False when it was recorded before. Raises SQLAlchemy errors."""
        self._purge_if_due()
        try:
            with session_scope(self._sessions) as session:
                session.add(
                    UsedSignature(
                        signature_sha256=signature_digest, hotkey=hotkey, expires_at=expires_at
                    )
                )
        except IntegrityError:
            return False
        return True

    def _purge_if_due(self) -> None:
        now = self._clock()
        if self._last_purge is not None and now - self._last_purge < REPLAY_PURGE_INTERVAL:
            return
        self._last_purge = now
        with session_scope(self._sessions) as session:
            session.execute(
                delete(UsedSignature)
                .where(UsedSignature.expires_at < now)
                .execution_options(synchronize_session=False)
            )


@dataclass(frozen=True, slots=True)
class MinerSummary:
    """One registered miner, as ``miner list`` shows it."""

    hotkey: str
    created_at: datetime
    tokens: int
    servers: int


def add_miner(session: Session, hotkey: str, now: datetime) -> bool:
    """Register ``hotkey``; False when it already was.

    Raises RequestInvalid when ``hotkey`` is not an SS58 sr25519 address.
    """
    try:
        hotkey_public_key(hotkey)
    except AuthenticationError:
        raise RequestInvalid(f"{hotkey!r} is not an SS58 sr25519 hotkey address") from None
    if session.get(Miner, hotkey) is not None:
        return False
    session.add(Miner(hotkey=hotkey, created_at=now))
    session.flush()
    return True


def list_miners(session: Session) -> list[MinerSummary]:
    """Every registered miner with its token and server counts. Raises SQLAlchemy errors."""
    tokens = (
        select(func.count())
        .where(MinerToken.miner_hotkey == Miner.hotkey)
        .correlate(Miner)
        .scalar_subquery()
    )
    servers = (
        select(func.count()).where(Server.miner_hotkey == Miner.hotkey).correlate(Miner)
    ).scalar_subquery()
    rows = session.execute(
        select(Miner.hotkey, Miner.created_at, tokens, servers).order_by(Miner.created_at)
    ).all()
    return [MinerSummary(row[0], row[1], int(row[2]), int(row[3])) for row in rows]


def remove_miner(session: Session, hotkey: str) -> None:
    """Unregister ``hotkey`` and revoke its tokens.

    Raises NotFound for an unknown miner and Conflict while it still owns servers.
    """
    miner = session.get(Miner, hotkey)
    if miner is None:
        raise NotFound(f"miner {hotkey} is not registered")
    owned = session.scalar(select(func.count()).where(Server.miner_hotkey == hotkey)) or 0
    if owned:
        raise Conflict(f"miner {hotkey} still owns {owned} server(s); delete them first")
    session.execute(delete(MinerToken).where(MinerToken.miner_hotkey == hotkey))
    session.delete(miner)
    session.flush()


def issue_token(session: Session, hotkey: str, now: datetime) -> str:
    """Create an API token for ``hotkey`` and return it (the only time it is visible).

    Raises NotFound for an unknown miner.
    """
    if session.get(Miner, hotkey) is None:
        raise NotFound(f"miner {hotkey} is not registered")
    token = new_token()
    session.add(MinerToken(miner_hotkey=hotkey, token_sha256=token_digest(token), created_at=now))
    session.flush()
    return token


def revoke_tokens(session: Session, hotkey: str) -> int:
    """Delete every API token of ``hotkey``; return how many. Raises NotFound if unknown."""
    if session.get(Miner, hotkey) is None:
        raise NotFound(f"miner {hotkey} is not registered")
    result = session.execute(
        delete(MinerToken)
        .where(MinerToken.miner_hotkey == hotkey)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
