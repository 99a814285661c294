"""What a running server holds: settings, clock, database, keys, caches, metrics."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from tdx_boot_attest.server.boot.active_images import ActiveImages
from tdx_boot_attest.server.boot.nonces import KEY_PURPOSE, SALT_BYTES, SALT_NAME, BootNonces
from tdx_boot_attest.server.boot.store import BootStore
from tdx_boot_attest.server.clock import Clock
from tdx_boot_attest.server.collateral import CollateralFetcher, PcsCollateralFetcher
from tdx_boot_attest.server.collateral_cache import CollateralCache, CollateralPolicy
from tdx_boot_attest.server.db.availability import DatabaseGate
from tdx_boot_attest.server.db.engine import make_engine, make_sessionmaker
from tdx_boot_attest.server.db.secrets import shared_secret
from tdx_boot_attest.server.errors import ConfigurationError
from tdx_boot_attest.server.fleet.store import FleetStore
from tdx_boot_attest.server.metrics import Metrics
from tdx_boot_attest.server.platform_policy import PlatformPolicy
from tdx_boot_attest.server.sealing import MasterKey, load_master_key
from tdx_boot_attest.server.settings import Settings


@dataclass(slots=True)
class ServerContext:
    """Shared, long-lived state of one server process (injected into request handlers)."""

    settings: Settings
    clock: Clock
    engine: Engine
    sessions: sessionmaker[Session]
    master_key: MasterKey
    trust_root_der: bytes | None
    collateral: CollateralCache
    metrics: Metrics
    boot_store: BootStore
    active_images: ActiveImages
    fleet_store: FleetStore
    platform_policy: PlatformPolicy = field(default_factory=PlatformPolicy)
    last_nonce_purge: datetime | None = None
    database_gate: DatabaseGate = field(default_factory=DatabaseGate)
    # Loaded on first use (it needs the database): see boot_nonce_keys().
    boot_nonces: BootNonces | None = None
    _boot_nonces_lock: threading.Lock = field(default_factory=threading.Lock)

    def boot_nonce_keys(self) -> BootNonces:
        """The boot nonce key, derived from the master key and the shared salt.

        Reads (or, first of all replicas, writes) the salt: call it on a worker thread.
        Raises SQLAlchemy / driver errors if the database fails.
        """
        with self._boot_nonces_lock:
            if self.boot_nonces is None:
                salt = shared_secret(self.engine, SALT_NAME, SALT_BYTES, self.clock())
                self.boot_nonces = BootNonces(self.master_key.derive_key(KEY_PURPOSE, salt))
            return self.boot_nonces

    @classmethod
    def build(
        cls,
        settings: Settings,
        clock: Clock,
        collateral_fetcher: CollateralFetcher | None = None,
        engine: Engine | None = None,
    ) -> ServerContext:
        """Open the database and load keys and the trust root. Raises ConfigurationError."""
        engine = engine or make_engine(settings.database_url, limits=settings.database_limits)
        sessions = make_sessionmaker(engine)
        fetcher = collateral_fetcher or PcsCollateralFetcher(
            settings.pccs_url, timeout=settings.collateral_fetch_timeout_seconds
        )
        metrics = Metrics()
        boot_store = BootStore(engine)
        return cls(
            settings=settings,
            clock=clock,
            engine=engine,
            sessions=sessions,
            master_key=load_master_key(settings.master_key_file, dev_mode=settings.dev_mode),
            trust_root_der=load_trust_root(settings.trust_root),
            collateral=CollateralCache(
                sessions,
                fetcher,
                CollateralPolicy(
                    refresh_margin=timedelta(seconds=settings.collateral_refresh_margin_seconds),
                    retry_after_seconds=settings.collateral_retry_after_seconds,
                    fetch_timeout_seconds=settings.collateral_fetch_timeout_seconds,
                    unknown_platform_seconds=settings.collateral_unknown_platform_seconds,
                ),
                metrics,
            ),
            metrics=metrics,
            boot_store=boot_store,
            active_images=ActiveImages(boot_store.load_active_images),
            fleet_store=FleetStore(sessions),
            platform_policy=settings.platform_policy(),
        )


def load_trust_root(path: Path | None) -> bytes | None:
    """The trust root certificate as DER (read from DER or PEM); None means Intel's root.

    Raises ConfigurationError when the file is unreadable or not a certificate.
    """
    if path is None:
        return None
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read trust root {path}: {exc.strerror}") from None
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
        x509.load_der_x509_certificate(data)
        return data
    except ValueError:
        raise ConfigurationError(f"trust root {path} is not a DER or PEM certificate") from None
