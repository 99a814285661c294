"""Tables of the fleet side: miners, their API tokens, the signature replay store, the
server registry with its GPUs, and runtime attestations (kept for audit after a delete).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tdx_boot_attest.server.db.base import Base, UtcDateTime
from tdx_boot_attest.server.db.models import IDENTITY_KEY_HEX, MEASUREMENT_HEX

HOTKEY_CHARS = 64
SERVER_ID_CHARS = 128
GPU_UUID_CHARS = 128


class Miner(Base):
    """A miner allowed to use the fleet API, identified by its SS58 sr25519 hotkey."""

    __tablename__ = "miners"

    hotkey: Mapped[str] = mapped_column(String(HOTKEY_CHARS), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class MinerToken(Base):
    """A per-miner API token, stored only as the SHA-256 hex digest of the token."""

    __tablename__ = "miner_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    miner_hotkey: Mapped[str] = mapped_column(
        ForeignKey("miners.hotkey", ondelete="CASCADE"), index=True
    )
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class UsedSignature(Base):
    """A hotkey signature already accepted; kept until its timestamp leaves the window."""

    __tablename__ = "used_signatures"

    signature_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    hotkey: Mapped[str] = mapped_column(String(HOTKEY_CHARS))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class Server(Base):
    """A registered server (a Kubernetes node), owned by one miner."""

    __tablename__ = "servers"
    __table_args__ = (Index("ux_servers_identity_key", "identity_key", unique=True),)

    id: Mapped[str] = mapped_column(String(SERVER_ID_CHARS), primary_key=True)
    miner_hotkey: Mapped[str] = mapped_column(
        ForeignKey("miners.hotkey", ondelete="RESTRICT"), index=True
    )
    name: Mapped[str] = mapped_column(String(255))
    host: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    boot_attestation_id: Mapped[str | None] = mapped_column(
        ForeignKey("boot_attestations.id", ondelete="SET NULL"), nullable=True
    )
    image_id: Mapped[int | None] = mapped_column(
        ForeignKey("images.id", ondelete="SET NULL"), nullable=True
    )
    image_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # The identity key of the boot it is bound to (protocol v2): runtime attestation must
    # prove possession of it. Null: registered from a boot by an older agent.
    identity_key: Mapped[str | None] = mapped_column(String(IDENTITY_KEY_HEX), nullable=True)

    gpus: Mapped[list[ServerGpu]] = relationship(
        back_populates="server",
        cascade="all, delete-orphan",
        order_by="ServerGpu.device_index",
        lazy="selectin",
    )


class ServerGpu(Base):
    """One GPU of a registered server; a GPU uuid belongs to at most one server."""

    __tablename__ = "server_gpus"

    uuid: Mapped[str] = mapped_column(String(GPU_UUID_CHARS), primary_key=True)
    server_id: Mapped[str] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    memory: Mapped[int] = mapped_column(BigInteger)
    clock_rate: Mapped[float] = mapped_column(Float)
    device_index: Mapped[int] = mapped_column(Integer)
    major: Mapped[int | None] = mapped_column(Integer, nullable=True)
    minor: Mapped[int | None] = mapped_column(Integer, nullable=True)
    processors: Mapped[int | None] = mapped_column(Integer, nullable=True)
    sxm: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    max_threads_per_processor: Mapped[int | None] = mapped_column(Integer, nullable=True)
    concurrent_kernels: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    ecc: Mapped[bool | None] = mapped_column(Boolean, nullable=True)

    server: Mapped[Server] = relationship(back_populates="gpus")


class RuntimeAttestation(Base):
    """One runtime attestation attempt, accepted or refused.

    ``server_id`` is deliberately not a foreign key: the rows outlive a deleted server
    for audit, marked by ``server_deleted_at``.
    """

    __tablename__ = "runtime_attestations"
    __table_args__ = (
        Index("ix_runtime_attestations_server_id_created_at", "server_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    server_id: Mapped[str] = mapped_column(String(SERVER_ID_CHARS))
    miner_hotkey: Mapped[str] = mapped_column(String(HOTKEY_CHARS))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    verified: Mapped[bool] = mapped_column(Boolean)
    verified_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    client_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    nonce: Mapped[str | None] = mapped_column(String(64), nullable=True)
    image_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    tcb_status: Mapped[str | None] = mapped_column(String(64), nullable=True)
    mrtd: Mapped[str | None] = mapped_column(String(MEASUREMENT_HEX), nullable=True)
    rtmr0: Mapped[str | None] = mapped_column(String(MEASUREMENT_HEX), nullable=True)
    rtmr1: Mapped[str | None] = mapped_column(String(MEASUREMENT_HEX), nullable=True)
    rtmr2: Mapped[str | None] = mapped_column(String(MEASUREMENT_HEX), nullable=True)
    rtmr3: Mapped[str | None] = mapped_column(String(MEASUREMENT_HEX), nullable=True)
    quote: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    event_log: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    differences: Mapped[str | None] = mapped_column(Text, nullable=True)
    server_deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # The identity key the attempt was held against (null: verified without the binding).
    identity_key: Mapped[str | None] = mapped_column(String(IDENTITY_KEY_HEX), nullable=True)
