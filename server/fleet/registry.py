"""The server registry: register, list, show and delete a miner's servers.

A miner only ever sees its own servers: another miner's server is "not found", so
server ids do not leak (registration of a taken id is the one exception: a 409).

Registration links a server to the newest accepted boot attestation from its host and
binds it to that boot's identity key (protocol v2), which runtime attestation must then
prove possession of. One boot's key binds at most one server, so a TD cannot answer for
several servers by attesting its boot from several addresses. Registering the same
server again moves it to the host's newest accepted boot (what a reboot needs).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tdx_boot_attest.agent.protocol import Reason
from tdx_boot_attest.server.db.fleet import RuntimeAttestation, Server, ServerGpu
from tdx_boot_attest.server.db.models import BootAttestation, Nonce
from tdx_boot_attest.server.errors import Conflict, Forbidden, NotFound
from tdx_boot_attest.server.fleet.schemas import NodeArgs, ServerArgs, normalise_gpu_uuid

ACCEPTED = "accepted"


def runtime_nonce_scope(server_id: str) -> str:
    """The nonce-store scope of a server's runtime nonces. Raises nothing."""
    return f"runtime:{server_id}"


@dataclass(frozen=True, slots=True)
class RegistrationPolicy:
    """Whether registration needs a recent successful boot attestation from the host."""

    require_boot_attestation: bool
    boot_window: timedelta


def register_server(
    session: Session,
    miner: str,
    args: ServerArgs,
    policy: RegistrationPolicy,
    now: datetime,
) -> Server:
    """Register ``args`` for ``miner``, or return the same server when it is already theirs.

    Raises Conflict when the id belongs to another miner, when it is registered with a
    different host or GPU set, when a GPU uuid belongs to another server, or when the
    boot's identity key is bound to another server; and
    Forbidden(no_recent_boot_attestation) when the policy requires a boot attestation
    from ``args.host`` within the window and there is none.
    """
    existing = session.get(Server, args.id)
    if existing is not None:
        server = _same_registration(existing, miner, args)
        _rebind_to_newest_boot(session, server, policy, now)
        return server
    _refuse_taken_gpus(session, args)
    boot = _linked_boot_attestation(session, args.host, policy, now)
    if boot is not None and boot.identity_key is not None:
        _refuse_bound_identity(session, boot.identity_key, args.id)
    server = Server(
        id=args.id,
        miner_hotkey=miner,
        name=args.name or args.id,
        host=args.host,
        created_at=now,
        boot_attestation_id=boot.id if boot is not None else None,
        image_id=boot.image_id if boot is not None else None,
        image_name=boot.image_name if boot is not None else None,
        identity_key=boot.identity_key if boot is not None else None,
        gpus=[_gpu_row(gpu) for gpu in args.gpus],
    )
    session.add(server)
    try:
        session.flush()
    except IntegrityError:
        # A concurrent registration took the id or a GPU uuid between our checks and here.
        raise Conflict(
            f"server {args.id}, one of its GPUs or its boot was registered concurrently; retry"
        ) from None
    return server


def _same_registration(existing: Server, miner: str, args: ServerArgs) -> Server:
    if existing.miner_hotkey != miner:
        raise Conflict(f"server id {args.id} is registered by another miner")
    # Rows from before uuids were stored canonically are compared in canonical form too.
    registered = {normalise_gpu_uuid(gpu.uuid): gpu.device_index for gpu in existing.gpus}
    requested = {gpu.uuid: gpu.device_index for gpu in args.gpus}
    if existing.host != args.host or registered != requested:
        raise Conflict(
            f"server {args.id} is already registered with a different host or GPU set; "
            "delete it before registering it again"
        )
    return existing


def _refuse_taken_gpus(session: Session, args: ServerArgs) -> None:
    uuids = [gpu.uuid for gpu in args.gpus]
    taken = session.scalars(
        select(ServerGpu.uuid).where(ServerGpu.uuid.in_(uuids), ServerGpu.server_id != args.id)
    ).all()
    if taken:
        raise Conflict(f"GPU {', '.join(sorted(taken))} is already registered to another server")


def _rebind_to_newest_boot(
    session: Session, server: Server, policy: RegistrationPolicy, now: datetime
) -> None:
    """Move ``server`` to the newest accepted boot from its host, if that is another one.

    The binding stays as it is when that boot has no identity key while the current one
    has (that would drop the binding), or when its key is bound to another server (the
    newest boot from a shared address is another server's): a registration repeated as
    it was sent always succeeds. Raises Conflict only on a concurrent registration.
    """
    boot = _newest_boot(session, server.host, policy, now)
    if boot is None or boot.id == server.boot_attestation_id:
        return
    if boot.identity_key is None and server.identity_key is not None:
        return
    if boot.identity_key is not None and _bound_elsewhere(session, boot.identity_key, server.id):
        return
    server.boot_attestation_id = boot.id
    server.image_id = boot.image_id
    server.image_name = boot.image_name
    server.identity_key = boot.identity_key
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(
            f"the boot of server {server.id} was registered concurrently; retry"
        ) from None


def _bound_elsewhere(session: Session, identity_key: str, server_id: str) -> bool:
    holder = session.scalar(
        select(Server.id).where(Server.identity_key == identity_key, Server.id != server_id)
    )
    return holder is not None


def _refuse_bound_identity(session: Session, identity_key: str, server_id: str) -> None:
    if _bound_elsewhere(session, identity_key, server_id):
        raise Conflict(
            "the newest boot attestation from this host is already bound to another server "
            f"(identity key {identity_key[:16]}…): each boot identifies one server; boot "
            "this server through attestation, then register it"
        )


def _newest_boot(
    session: Session, host: str, policy: RegistrationPolicy, now: datetime
) -> BootAttestation | None:
    query = (
        select(BootAttestation)
        .where(BootAttestation.client_ip == host, BootAttestation.verdict == ACCEPTED)
        .order_by(BootAttestation.created_at.desc())
        .limit(1)
    )
    if policy.require_boot_attestation:
        query = query.where(BootAttestation.created_at >= now - policy.boot_window)
    return session.scalars(query).first()


def _linked_boot_attestation(
    session: Session, host: str, policy: RegistrationPolicy, now: datetime
) -> BootAttestation | None:
    boot = _newest_boot(session, host, policy, now)
    if boot is None and policy.require_boot_attestation:
        window = int(policy.boot_window.total_seconds())
        raise Forbidden(
            f"no successful boot attestation from {host} in the last {window} s; "
            "boot the server through attestation before registering it",
            Reason.NO_RECENT_BOOT_ATTESTATION,
        )
    return boot


def _gpu_row(gpu: NodeArgs) -> ServerGpu:
    return ServerGpu(**gpu.model_dump())


def list_servers(session: Session, miner: str) -> list[Server]:
    """The servers of ``miner``, oldest first. Raises SQLAlchemy errors."""
    return list(
        session.scalars(
            select(Server)
            .where(Server.miner_hotkey == miner)
            .order_by(Server.created_at, Server.id)
        )
    )


def get_server(session: Session, miner: str, server_id: str) -> Server:
    """The server ``server_id`` of ``miner``.

    Raises NotFound when it does not exist or belongs to another miner (the same answer).
    """
    server = session.get(Server, server_id)
    if server is None or server.miner_hotkey != miner:
        raise NotFound(f"server {server_id} not found")
    return server


def boot_attestation_of(session: Session, server: Server) -> BootAttestation | None:
    """The boot attestation ``server`` was registered with, if still on record."""
    if server.boot_attestation_id is None:
        return None
    return session.get(BootAttestation, server.boot_attestation_id)


def delete_server(session: Session, miner: str, server_id: str, now: datetime) -> int:
    """Delete the server, its GPUs and pending runtime nonces; keep its attestations.

    Returns how many runtime attestation rows were kept (marked ``server_deleted_at``).
    Raises NotFound as :func:`get_server` does.
    """
    server = get_server(session, miner, server_id)
    kept = session.execute(
        update(RuntimeAttestation)
        .where(
            RuntimeAttestation.server_id == server_id,
            RuntimeAttestation.server_deleted_at.is_(None),
        )
        .values(server_deleted_at=now)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        delete(Nonce)
        .where(Nonce.scope == runtime_nonce_scope(server_id))
        .execution_options(synchronize_session=False)
    )
    session.delete(server)
    session.flush()
    return int(getattr(kept, "rowcount", 0) or 0)
