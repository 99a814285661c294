"""Stored single-use nonces (runtime attestation): issue, consume atomically, purge.

Boot nonces are stateless (server.boot.nonces); their spent record is purged here too.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn, Protocol

from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from tdx_boot_attest.agent.protocol import NONCE_BYTES, Reason
from tdx_boot_attest.server.db.base import Base
from tdx_boot_attest.server.db.models import Nonce, SpentNonce
from tdx_boot_attest.server.errors import NonceRejected

BOOT_SCOPE = "boot"
# Consumed and expired rows are kept this long, so a late retry hears "expired" or
# "used" rather than "unknown", then purged.
PURGE_GRACE = timedelta(hours=1)

# Built once: constructing statements per request costs more than running them.
_NONCES = Base.metadata.tables[Nonce.__tablename__]
_INSERT = insert(_NONCES)
CONSUME_STATEMENT = (
    update(_NONCES)
    .where(
        _NONCES.c.nonce == bindparam("wanted"),
        _NONCES.c.scope == bindparam("wanted_scope"),
        _NONCES.c.consumed_at.is_(None),
        _NONCES.c.expires_at > bindparam("now"),
    )
    .values(consumed_at=bindparam("now"))
    .returning(_NONCES.c.nonce)
)
LOOK_UP_STATEMENT = select(_NONCES.c.expires_at, _NONCES.c.consumed_at).where(
    _NONCES.c.nonce == bindparam("wanted"), _NONCES.c.scope == bindparam("wanted_scope")
)


class NonceState(Protocol):
    """What the spend checks read of a stored nonce (an ORM row or a named row)."""

    @property
    def expires_at(self) -> datetime: ...
    @property
    def consumed_at(self) -> datetime | None: ...


def refuse_unusable_nonce(state: NonceState | None) -> NoReturn:
    """Refuse a nonce that cannot be spent: the one wording of every nonce refusal.

    Call it once a nonce is known to be unknown (``state`` None), used or expired.
    Raises NonceRejected with nonce_unknown, nonce_used or else nonce_expired.
    """
    if state is None:
        raise NonceRejected("nonce was not issued by this server", Reason.NONCE_UNKNOWN)
    if state.consumed_at is not None:
        raise NonceRejected("nonce has already been used", Reason.NONCE_USED)
    raise NonceRejected("nonce has expired; request a new one", Reason.NONCE_EXPIRED)


def check_nonce_spendable(state: NonceState | None, now: datetime) -> None:
    """Return if the stored nonce ``state`` can be spent at ``now``; reads nothing.

    Raises NonceRejected (nonce_unknown, nonce_used, nonce_expired) otherwise.
    """
    if state is None or state.consumed_at is not None or state.expires_at <= now:
        refuse_unusable_nonce(state)


@dataclass(frozen=True, slots=True)
class IssuedNonce:
    """A nonce as stored."""

    nonce: str
    scope: str
    created_at: datetime
    expires_at: datetime
    client_ip: str | None


def new_nonce(
    now: datetime, ttl_seconds: int, client_ip: str | None, scope: str = BOOT_SCOPE
) -> IssuedNonce:
    """A fresh random nonce valid for ``ttl_seconds`` (not yet stored). Raises nothing."""
    return IssuedNonce(
        nonce=secrets.token_bytes(NONCE_BYTES).hex(),
        scope=scope,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_seconds),
        client_ip=client_ip,
    )


def issue_nonce(
    session: Session | Connection,
    now: datetime,
    ttl_seconds: int,
    client_ip: str | None,
    scope: str = BOOT_SCOPE,
) -> IssuedNonce:
    """Store and return a fresh nonce valid for ``ttl_seconds``. Raises SQLAlchemy errors."""
    nonce = new_nonce(now, ttl_seconds, client_ip, scope)
    session.execute(
        _INSERT,
        {
            "nonce": nonce.nonce,
            "scope": scope,
            "created_at": now,
            "expires_at": nonce.expires_at,
            "client_ip": client_ip,
        },
    )
    return nonce


def consume_nonce(
    session: Session | Connection, nonce_hex: str, now: datetime, scope: str = BOOT_SCOPE
) -> None:
    """Mark the nonce used; exactly one caller can ever succeed for a given nonce.

    The single conditional UPDATE is the atomic step on both SQLite and PostgreSQL: the
    row lock (or SQLite's write lock) makes concurrent consumers see it already used.
    Raises NonceRejected with nonce_unknown, nonce_expired or nonce_used.
    """
    params = {"wanted": nonce_hex, "wanted_scope": scope, "now": now}
    claimed = session.execute(CONSUME_STATEMENT, params).first()
    if claimed is not None:
        return
    # The claim failed: the nonce is unknown, used or expired.
    refuse_unusable_nonce(session.execute(LOOK_UP_STATEMENT, params).first())


def purge_nonces(session: Session | Connection, now: datetime) -> int:
    """Delete nonces (stored or spent) expired over PURGE_GRACE ago; return the count.

    Raises SQLAlchemy errors.
    """
    count = 0
    for table in (Nonce, SpentNonce):
        result = session.execute(delete(table).where(table.expires_at < now - PURGE_GRACE))
        count += int(getattr(result, "rowcount", 0) or 0)
    return count
