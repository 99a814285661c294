"""The fleet side's database work: servers with their boot, runtime nonces and attempts.

The fleet routers and server.fleet.runtime read and write through a FleetStore (as the
boot path does through server.boot.store.BootStore), each call in its own session from
the context's sessionmaker; the registration rules stay in server.fleet.registry. The
rows returned stay readable after their session closes (the sessionmaker does not
expire them on commit).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tdx_boot_attest.server.audit import AttemptRecord
from tdx_boot_attest.server.db.engine import session_scope
from tdx_boot_attest.server.db.fleet import RuntimeAttestation, Server
from tdx_boot_attest.server.db.models import BootAttestation, Image, Nonce
from tdx_boot_attest.server.fleet import registry
from tdx_boot_attest.server.fleet.schemas import ServerArgs
from tdx_boot_attest.server.nonces import IssuedNonce, consume_nonce, issue_nonce


@dataclass(frozen=True, slots=True)
class ServerView:
    """A registered server and the boot attestation it is bound to, if still on record."""

    server: Server
    boot: BootAttestation | None


@dataclass(frozen=True, slots=True)
class StatusView:
    """What the attestation status of a server is decided from."""

    server: Server
    boot: BootAttestation | None
    latest: RuntimeAttestation | None
    last_success: RuntimeAttestation | None


@dataclass(frozen=True, slots=True)
class StoredNonce:
    """A row of the ``nonces`` table, as runtime attestation checks it."""

    scope: str
    expires_at: datetime
    consumed_at: datetime | None


class FleetStore:
    """Register, show and delete servers; issue and spend runtime nonces; record attempts."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def register_server(
        self,
        miner: str,
        args: ServerArgs,
        policy: registry.RegistrationPolicy,
        now: datetime,
    ) -> ServerView:
        """Register ``args`` for ``miner``. Raises what registry.register_server raises."""
        with session_scope(self._sessions) as session:
            server = registry.register_server(session, miner, args, policy, now)
            return _view(session, server)

    def list_servers(self, miner: str) -> list[ServerView]:
        """The servers of ``miner``, oldest first. Raises SQLAlchemy errors."""
        with session_scope(self._sessions) as session:
            return [_view(session, server) for server in registry.list_servers(session, miner)]

    def get_server(self, miner: str, server_id: str) -> Server:
        """The server ``server_id`` of ``miner``. Raises NotFound."""
        with session_scope(self._sessions) as session:
            return registry.get_server(session, miner, server_id)

    def server_view(self, miner: str, server_id: str) -> ServerView:
        """The server ``server_id`` of ``miner`` with its boot. Raises NotFound."""
        with session_scope(self._sessions) as session:
            return _view(session, registry.get_server(session, miner, server_id))

    def delete_server(self, miner: str, server_id: str, now: datetime) -> int:
        """Delete the server; return how many runtime attestations were kept. Raises NotFound."""
        with session_scope(self._sessions) as session:
            return registry.delete_server(session, miner, server_id, now)

    def attestation_status(self, miner: str, server_id: str) -> StatusView:
        """The server, its boot, its latest attempt and latest success. Raises NotFound."""
        with session_scope(self._sessions) as session:
            server = registry.get_server(session, miner, server_id)
            return StatusView(
                server=server,
                boot=registry.boot_attestation_of(session, server),
                latest=_latest_attestation(session, server_id, verified_only=False),
                last_success=_latest_attestation(session, server_id, verified_only=True),
            )

    def issue_runtime_nonce(
        self, miner: str, server_id: str, now: datetime, ttl_seconds: int, client_ip: str | None
    ) -> IssuedNonce:
        """Store a nonce bound to the miner's server. Raises NotFound for another's server."""
        with session_scope(self._sessions) as session:
            registry.get_server(session, miner, server_id)
            return issue_nonce(
                session,
                now,
                ttl_seconds,
                client_ip,
                scope=registry.runtime_nonce_scope(server_id),
            )

    def stored_nonce(self, nonce_hex: str) -> StoredNonce | None:
        """The stored nonce ``nonce_hex`` of any scope, if there is one. Reads only."""
        with session_scope(self._sessions) as session:
            row = session.execute(
                select(Nonce.scope, Nonce.expires_at, Nonce.consumed_at).where(
                    Nonce.nonce == nonce_hex
                )
            ).first()
        if row is None:
            return None
        return StoredNonce(scope=row.scope, expires_at=row.expires_at, consumed_at=row.consumed_at)

    def image(self, image_id: int) -> Image | None:
        """The image row ``image_id`` (retired or not), if it exists. Raises SQLAlchemy errors."""
        with session_scope(self._sessions) as session:
            return session.get(Image, image_id)

    def record_runtime_attempt(
        self, record: AttemptRecord, server: Server, *, spend_nonce: bool
    ) -> None:
        """Insert the attempt's row, spending its nonce in the same transaction if asked.

        Raises NonceRejected (nothing written) when the nonce cannot be spent, and
        SQLAlchemy errors if the database fails (nothing written either).
        """
        row = RuntimeAttestation(
            **record.columns(),
            server_id=server.id,
            miner_hotkey=server.miner_hotkey,
            verified=record.accepted,
            verified_at=record.created_at if record.accepted else None,
        )
        with session_scope(self._sessions) as session:
            if spend_nonce and record.nonce is not None:
                scope = registry.runtime_nonce_scope(server.id)
                consume_nonce(session, record.nonce, record.created_at, scope=scope)
            session.add(row)


def _view(session: Session, server: Server) -> ServerView:
    return ServerView(server=server, boot=registry.boot_attestation_of(session, server))


def _latest_attestation(
    session: Session, server_id: str, *, verified_only: bool
) -> RuntimeAttestation | None:
    query = select(RuntimeAttestation).where(
        RuntimeAttestation.server_id == server_id,
        RuntimeAttestation.server_deleted_at.is_(None),
    )
    if verified_only:
        query = query.where(RuntimeAttestation.verified.is_(True))
    # Attempts in the same clock tick: the refused one counts as the latest (fail closed).
    order = (RuntimeAttestation.created_at.desc(), RuntimeAttestation.verified.asc())
    return session.scalars(query.order_by(*order, RuntimeAttestation.id).limit(1)).first()
