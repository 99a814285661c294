"""Tables of the boot path: nonces, images, boot attestations, collateral, shared secrets."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tdx_boot_attest.server.db.base import Base, UtcDateTime

MEASUREMENT_HEX = 96
ANY_MEASUREMENT = "any"
# A per-boot Ed25519 identity key (protocol v2), as 64 lowercase hex characters.
IDENTITY_KEY_HEX = 64


class Nonce(Base):
    """A single-use challenge; ``consumed_at`` is set exactly once, atomically."""

    __tablename__ = "nonces"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    scope: Mapped[str] = mapped_column(String(128), default="boot")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    consumed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    client_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Image(Base):
    """An approved VM image: its measurement profiles and its sealed LUKS passphrase."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    mrtd: Mapped[str] = mapped_column(String(MEASUREMENT_HEX))
    boot_rtmr0: Mapped[str] = mapped_column(String(MEASUREMENT_HEX))
    boot_rtmr1: Mapped[str] = mapped_column(String(MEASUREMENT_HEX))
    boot_rtmr2: Mapped[str] = mapped_column(String(MEASUREMENT_HEX))
    boot_rtmr3: Mapped[str] = mapped_column(String(MEASUREMENT_HEX))
    runtime_rtmr0: Mapped[str] = mapped_column(String(MEASUREMENT_HEX))
    runtime_rtmr1: Mapped[str] = mapped_column(String(MEASUREMENT_HEX))
    runtime_rtmr2: Mapped[str] = mapped_column(String(MEASUREMENT_HEX))
    runtime_rtmr3: Mapped[str] = mapped_column(String(MEASUREMENT_HEX))
    mrconfigid: Mapped[str | None] = mapped_column(String(MEASUREMENT_HEX), nullable=True)
    mrowner: Mapped[str | None] = mapped_column(String(MEASUREMENT_HEX), nullable=True)
    sealed_passphrase: Mapped[bytes] = mapped_column(LargeBinary)
    # The expected event log (JSON list in agent.eventlog's event form), when known.
    reference_events: Mapped[str | None] = mapped_column(Text, nullable=True)
    reference_source: Mapped[str | None] = mapped_column(String(256), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    passphrase_rotated_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    retired_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class BootAttestation(Base):
    """One boot attestation attempt, accepted or refused, kept for audit."""

    __tablename__ = "boot_attestations"
    __table_args__ = (
        Index("ix_boot_attestations_client_ip_created_at", "client_ip", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    verdict: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    client_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    nonce: Mapped[str | None] = mapped_column(String(64), nullable=True)
    image_id: Mapped[int | None] = mapped_column(
        ForeignKey("images.id", ondelete="SET NULL"), nullable=True
    )
    image_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    quote: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    tcb_status: Mapped[str | None] = mapped_column(String(64), nullable=True)
    advisory_ids: Mapped[str | None] = mapped_column(Text, nullable=True)
    mrtd: Mapped[str | None] = mapped_column(String(MEASUREMENT_HEX), nullable=True)
    rtmr0: Mapped[str | None] = mapped_column(String(MEASUREMENT_HEX), nullable=True)
    rtmr1: Mapped[str | None] = mapped_column(String(MEASUREMENT_HEX), nullable=True)
    rtmr2: Mapped[str | None] = mapped_column(String(MEASUREMENT_HEX), nullable=True)
    rtmr3: Mapped[str | None] = mapped_column(String(MEASUREMENT_HEX), nullable=True)
    public_key_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kem: Mapped[str | None] = mapped_column(String(32), nullable=True)
    vm_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    bookkeeping: Mapped[str | None] = mapped_column(Text, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    event_log: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # A measurement mismatch explained event by event (JSON list), when it could be.
    differences: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The identity key a v2 agent bound into the quote (null: an older agent's boot).
    identity_key: Mapped[str | None] = mapped_column(String(IDENTITY_KEY_HEX), nullable=True)


class CollateralCacheEntry(Base):
    """DCAP collateral for one platform family (FMSPC + PCK CA), valid until ``next_update``."""

    __tablename__ = "collateral_cache"

    fmspc: Mapped[str] = mapped_column(String(12), primary_key=True)
    ca: Mapped[str] = mapped_column(String(16), primary_key=True)
    collateral_json: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime())
    next_update: Mapped[datetime] = mapped_column(UtcDateTime())
    fetched_at: Mapped[datetime] = mapped_column(UtcDateTime())
    source: Mapped[str] = mapped_column(String(16))


class Platform(Base):
    """A platform profile (host type) as captured: see agent.measurement.platform."""

    __tablename__ = "platforms"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    # The profile's versioned JSON form, and the SHA-384 manifests name it by.
    profile_json: Mapped[str] = mapped_column(Text)
    profile_sha384: Mapped[str] = mapped_column(String(MEASUREMENT_HEX))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class SpentNonce(Base):
    """A stateless boot nonce (see server.boot.nonces) already used by an attempt.

    Inserted in the attempt's own transaction; the primary key makes it single use
    across every replica. Kept until an hour past expiry, like ``nonces``.
    """

    __tablename__ = "spent_nonces"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    spent_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ServerSecret(Base):
    """Random values every replica sharing the database agrees on (e.g. the nonce key salt)."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
