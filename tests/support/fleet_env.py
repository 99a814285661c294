"""A verifier app on a simulated TDX platform, for the fleet tests: miners, boot, runtime.

Everything real except the hardware: the app from create_app on a migrated database,
DCAP verification against the simulator's root CA and collateral, real sr25519 keys,
real boot attestations through the API. The clock is injected and moves only when told.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response

from tdx_boot_attest.agent.identity import Identity
from tdx_boot_attest.agent.protocol import (
    Kem,
    boot_report_data,
    runtime_report_data,
    runtime_signature_message,
)
from tdx_boot_attest.server.app import create_app
from tdx_boot_attest.server.context import ServerContext
from tdx_boot_attest.server.db.engine import session_scope
from tdx_boot_attest.server.fleet.miners import add_miner, issue_token
from tdx_boot_attest.server.images import Profile as ImageProfile
from tdx_boot_attest.server.images import add_image
from tdx_boot_attest.server.settings import Settings
from tdx_boot_attest.tdxsim.profile import Profile as SimProfile
from tdx_boot_attest.tdxsim.state import SimState
from tests.support.miner_keys import MinerKey, json_body
from tests.support.sim_server import new_passphrase

IMAGE_NAME = "fleet-image"
RUNTIME_RTMR3 = "3a" * 48
HOST_IP = "10.20.0.7"


def new_identity() -> Identity:
    """A TD's per-boot identity key pair, as a v2 agent makes one (kept in this process)."""
    return Identity(Ed25519PrivateKey.generate(), Path("/run/tdx-boot-attest/identity.key"))


class FrozenClock:
    """A clock that only moves when advanced (whole seconds, UTC)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    @property
    def unix(self) -> int:
        return int(self.now.timestamp())


@dataclass
class FleetEnv:
    """One app, its simulated platform and helpers to act as VM, miner and admin."""

    app: FastAPI
    state: SimState
    clock: FrozenClock
    boot_profile: SimProfile
    runtime_profile: SimProfile
    clients: dict[str, TestClient] = field(default_factory=dict)
    # The identity of the newest v2 boot from each address (what registration binds).
    identities: dict[str, Identity] = field(default_factory=dict)

    @property
    def ctx(self) -> ServerContext:
        ctx: ServerContext = self.app.state.ctx
        return ctx

    def client(self, ip: str = HOST_IP) -> TestClient:
        """A test client whose requests come from ``ip``."""
        if ip not in self.clients:
            self.clients[ip] = TestClient(self.app, client=(ip, 40000))
        return self.clients[ip]

    def close(self) -> None:
        """Close the clients and the database engine (PostgreSQL connections are few)."""
        for client in self.clients.values():
            client.close()
        self.ctx.engine.dispose()

    # --- admin ---------------------------------------------------------------------------

    def add_miner(self, key: MinerKey) -> MinerKey:
        with session_scope(self.ctx.sessions) as session:
            add_miner(session, key.hotkey, self.clock())
        return key

    def issue_token(self, key: MinerKey) -> str:
        with session_scope(self.ctx.sessions) as session:
            return issue_token(session, key.hotkey, self.clock())

    # --- the VM ----------------------------------------------------------------------------

    def boot(
        self,
        ip: str = HOST_IP,
        profile: SimProfile | None = None,
        *,
        legacy: bool = False,
        identity: Identity | None = None,
    ) -> dict[str, Any]:
        """A real boot attestation from ``ip``; returns the response JSON (asserts 200).

        By default a v2 boot with a fresh identity key (or ``identity``), remembered as
        the identity of ``ip``; ``legacy``: a v1.1 agent's boot, without one.
        """
        client = self.client(ip)
        nonce = bytes.fromhex(client.get("/servers/nonce").json()["nonce"])
        public_key = X25519PrivateKey.generate().public_key().public_bytes_raw()
        body = {"public_key": base64.b64encode(public_key).decode()}
        if legacy:
            report_data = nonce + hashlib.sha256(public_key).digest()
        else:
            identity = identity or new_identity()
            report_data = boot_report_data(nonce, Kem.X25519, public_key, identity.public_key)
            body["identity_key"] = base64.b64encode(identity.public_key).decode()
        quote = self.state.make_quote(report_data, profile or self.boot_profile)
        body["quote"] = base64.b64encode(quote).decode()
        response = client.post(
            "/servers/boot/attestation", headers={"X-Chutes-Nonce": nonce.hex()}, json=body
        )
        assert response.status_code == 200, response.text
        if identity is not None:
            self.identities[ip] = identity
        result: dict[str, Any] = response.json()
        return result

    def runtime_quote(
        self,
        nonce_hex: str,
        profile: SimProfile | None = None,
        *,
        debug: bool = False,
        identity: Identity | None = None,
    ) -> str:
        """Base64 quote measured as ``profile`` whose REPORTDATA binds ``identity`` (v2), or
        is nonce || zeros without one (v1.1)."""
        nonce = bytes.fromhex(nonce_hex)
        report_data = (
            runtime_report_data(nonce, identity.public_key)
            if identity is not None
            else nonce + bytes(32)
        )
        quote = self.state.make_quote(report_data, profile or self.runtime_profile, debug=debug)
        return base64.b64encode(quote).decode()

    def runtime_body(
        self,
        server_id: str,
        nonce_hex: str,
        profile: SimProfile | None = None,
        *,
        ip: str = HOST_IP,
        debug: bool = False,
        legacy: bool = False,
        identity: Identity | None = None,
        event_log: bytes | None = None,
    ) -> dict[str, str]:
        """The body a v2 agent posts: a quote binding ``identity`` (default: the one of the
        newest boot from ``ip``, else from HOST_IP) and that key's signature; ``legacy``,
        or no boot with an identity at all: the v1.1 body."""
        body: dict[str, str] = {}
        identity = identity or self.identities.get(ip) or self.identities.get(HOST_IP)
        if legacy or identity is None:
            body["quote"] = self.runtime_quote(nonce_hex, profile, debug=debug)
        else:
            body["quote"] = self.runtime_quote(nonce_hex, profile, debug=debug, identity=identity)
            message = runtime_signature_message(
                server_id, bytes.fromhex(nonce_hex), base64.b64decode(body["quote"])
            )
            body["identity_signature"] = base64.b64encode(identity.sign(message)).decode()
        if event_log is not None:
            body["event_log"] = base64.b64encode(event_log).decode()
        return body

    # --- the miner -------------------------------------------------------------------------

    def signed(
        self,
        method: str,
        path: str,
        key: MinerKey,
        payload: Any = None,
        *,
        ip: str = HOST_IP,
        timestamp: int | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> Response:
        """A request signed by ``key`` the way a Chutes miner signs it."""
        body = json_body(payload) if payload is not None else b""
        headers = key.headers(self.clock.unix if timestamp is None else timestamp, body)
        if body:
            headers["Content-Type"] = "application/json"
        headers.update(extra_headers or {})
        response: Response = self.client(ip).request(
            method, path, content=body or None, headers=headers
        )
        return response

    def with_token(
        self, method: str, path: str, token: str, payload: Any = None, *, ip: str = HOST_IP
    ) -> Response:
        """A request authenticated with an API token."""
        response: Response = self.client(ip).request(
            method,
            path,
            json=payload,
            headers={"Authorization": f"Bearer {token}"},
        )
        return response

    def register(
        self, key: MinerKey, server_id: str = "node-1", *, ip: str = HOST_IP, gpus: int = 2
    ) -> Response:
        return self.signed("POST", "/servers/", key, server_args(server_id, ip, gpus=gpus), ip=ip)

    def attest(
        self,
        key: MinerKey,
        server_id: str,
        profile: SimProfile | None = None,
        *,
        ip: str = HOST_IP,
        legacy: bool = False,
        identity: Identity | None = None,
    ) -> Response:
        """Fetch a runtime nonce and post a runtime attestation for it (v2 unless ``legacy``)."""
        nonce = self.signed("GET", f"/servers/{server_id}/nonce", key, ip=ip)
        assert nonce.status_code == 200, nonce.text
        body = self.runtime_body(
            server_id, nonce.json()["nonce"], profile, ip=ip, legacy=legacy, identity=identity
        )
        return self.signed("POST", f"/servers/{server_id}/attestation", key, body, ip=ip)


def gpu(index: int, server_id: str = "node-1") -> dict[str, Any]:
    """A plausible H100 entry of NodeArgs."""
    return {
        "uuid": f"GPU-{hashlib.sha256(f'{server_id}/{index}'.encode()).hexdigest()[:32]}",
        "name": "NVIDIA H100 80GB HBM3",
        "memory": 85_520_809_984,
        "clock_rate": 1980.0,
        "device_index": index,
        "major": 9,
        "minor": 0,
        "processors": 132,
        "sxm": True,
        "max_threads_per_processor": 2048,
        "concurrent_kernels": True,
        "ecc": True,
    }


def server_args(server_id: str, host: str = HOST_IP, *, gpus: int = 2) -> dict[str, Any]:
    return {"id": server_id, "host": host, "gpus": [gpu(i, server_id) for i in range(gpus)]}


def make_fleet_env(database_url: str, state: SimState, tmp_path: Path, **settings: Any) -> FleetEnv:
    """An app on ``database_url`` trusting ``state``'s root, with one approved image whose
    runtime RTMR3 differs from its boot RTMR3 (as a running system extends it)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    root = tmp_path / "root_ca.der"
    root.write_bytes(state.root_ca_der)
    clock = FrozenClock(datetime.now(UTC).replace(microsecond=0))
    app = create_app(
        Settings(database_url=database_url, dev_mode=True, trust_root=root, **settings),
        clock,
        collateral_fetcher=lambda fmspc, ca: state.collateral_json,
    )
    boot_profile = SimProfile.default()
    runtime_profile = boot_profile.with_rtmr(3, RUNTIME_RTMR3)
    ctx: ServerContext = app.state.ctx
    with session_scope(ctx.sessions) as session:
        add_image(
            session,
            ctx.master_key,
            IMAGE_NAME,
            ImageProfile(
                mrtd=boot_profile.mrtd,
                boot_rtmrs=boot_profile.rtmrs,
                runtime_rtmrs=runtime_profile.rtmrs,
            ),
            passphrase=new_passphrase(),
            now=clock(),
        )
    return FleetEnv(app, state, clock, boot_profile, runtime_profile)


def decoded(response: Response) -> dict[str, Any]:
    """The JSON body of a response (for error assertions)."""
    body: dict[str, Any] = json.loads(response.content)
    return body
