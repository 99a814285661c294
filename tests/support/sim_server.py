"""An in-process verifier over real HTTP with a frozen clock, backed by a tdxsim platform."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from tdx_boot_attest.server.app import create_app
from tdx_boot_attest.server.collateral import CollateralFetcher
from tdx_boot_attest.server.collateral_cache import import_collateral
from tdx_boot_attest.server.db.engine import make_engine, make_sessionmaker, session_scope
from tdx_boot_attest.server.images import ReferenceEvents, add_image, profile_from_quote
from tdx_boot_attest.server.quote import parse_td_quote
from tdx_boot_attest.server.sealing import generate_master_key_file, load_master_key
from tdx_boot_attest.server.settings import Settings
from tdx_boot_attest.tdxsim.profile import Profile
from tdx_boot_attest.tdxsim.state import SimState
from tests.support.boot_client import AgentKey, expected_report_data, get_nonce, post_quote
from tests.support.uvicorn_thread import serve_in_thread

# Every passphrase a test registers starts with this, so log scans can look for it.
PASSPHRASE_PREFIX = b"luks-pw-"


def new_passphrase() -> bytes:
    """A random image passphrase carrying PASSPHRASE_PREFIX."""
    return PASSPHRASE_PREFIX + secrets.token_hex(16).encode()


@dataclass
class FrozenClock:
    """A settable clock for injection."""

    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


@dataclass
class SimServer:
    """A running in-process server, its simulator and its HTTP client."""

    base_url: str
    client: httpx.Client
    app: FastAPI
    sim: SimState
    clock: FrozenClock
    settings: Settings

    def register_image(
        self,
        name: str,
        profile: Profile | None = None,
        passphrase: bytes | None = None,
        reference: ReferenceEvents | None = None,
    ) -> bytes:
        """Register ``profile`` (default: the simulator's) as an image; returns its passphrase.

        ``reference``: the image's expected events, checked against the profile.
        """
        secret = passphrase or new_passphrase()
        golden = parse_td_quote(self.sim.make_quote(bytes(64), profile))
        register_image(
            self.settings,
            name,
            golden_profile=profile_from_quote(golden),
            passphrase=secret,
            reference=reference,
        )
        return secret

    def quote_for(
        self, nonce: bytes, key: AgentKey, profile: Profile | None = None, **kw: Any
    ) -> bytes:
        """A simulator quote over the REPORTDATA the protocol asks for."""
        return self.sim.make_quote(expected_report_data(nonce, key), profile, **kw)

    def boot(
        self,
        profile: Profile | None = None,
        quote_kw: dict[str, Any] | None = None,
        **body: Any,
    ) -> tuple[httpx.Response, bytes, AgentKey]:
        """One honest boot attestation: nonce, quote, post. Returns (response, nonce, key)."""
        key = AgentKey.generate()
        nonce = get_nonce(self.client)
        quote = self.quote_for(nonce, key, profile, **(quote_kw or {}))
        return post_quote(self.client, quote, key, nonce.hex(), **body), nonce, key


def register_image(
    settings: Settings,
    name: str,
    *,
    golden_profile: Any,
    passphrase: bytes,
    reference: ReferenceEvents | None = None,
) -> None:
    """Add an image directly through the admin functions."""
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        sessions = make_sessionmaker(engine)
        key = load_master_key(settings.master_key_file, dev_mode=settings.dev_mode)
        with session_scope(sessions) as session:
            add_image(
                session,
                key,
                name,
                golden_profile,
                passphrase=passphrase,
                now=dt.datetime.now(dt.UTC),
                reference=reference,
            )
    finally:
        engine.dispose()


def sim_settings(workdir: Path, database_url: str, sim: SimState, **overrides: Any) -> Settings:
    """Settings trusting the simulator's root, with a fresh master key file."""
    key_file = workdir / "master.key"
    if not key_file.exists():
        generate_master_key_file(key_file)
    values: dict[str, Any] = {
        "database_url": database_url,
        "master_key_file": key_file,
        "trust_root": sim.path / "root_ca.der",
        "pccs_url": "http://127.0.0.1:9",
        "collateral_retry_after_seconds": 0,
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def sim_server(
    workdir: Path,
    database_url: str,
    sim: SimState,
    *,
    clock: FrozenClock | None = None,
    fetcher: CollateralFetcher | None = None,
    import_sim_collateral: bool = True,
    **overrides: Any,
) -> Iterator[SimServer]:
    """Start create_app(...) under uvicorn on loopback with the simulator's trust root."""
    settings = sim_settings(workdir, database_url, sim, **overrides)
    frozen = clock or FrozenClock()
    if import_sim_collateral:
        engine = make_engine(database_url, pool_size=1)
        import_collateral(make_sessionmaker(engine), sim.collateral_json, frozen())
        engine.dispose()
    app = create_app(settings, clock=frozen, collateral_fetcher=fetcher)
    try:
        with (
            serve_in_thread(app) as base_url,
            httpx.Client(base_url=base_url, timeout=30) as client,
        ):
            yield SimServer(base_url, client, app, sim, frozen, settings)
    finally:
        app.state.ctx.engine.dispose()
