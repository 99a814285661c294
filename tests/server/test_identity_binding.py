"""Protocol v2: runtime evidence is bound to the TD that booted the server.

On SQLite and PostgreSQL, through the app over HTTP, with quotes from the simulated
platform: the boot records its identity key, registration binds the server to it, and a
runtime attestation is accepted only from the holder of that key. A second genuine TD
of the same approved image (its own per-boot key) is refused with its own reason, as
are old clients, unless the operator turns the documented fallback on.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from httpx import Response
from sqlalchemy import select

from tdx_boot_attest.agent.protocol import Kem, boot_report_data, runtime_signature_message
from tdx_boot_attest.server.db.engine import session_scope
from tdx_boot_attest.server.db.fleet import RuntimeAttestation, Server
from tdx_boot_attest.server.db.models import BootAttestation
from tests.support.fleet_env import HOST_IP, FleetEnv, decoded, new_identity
from tests.support.fleet_fixtures import FleetFactory
from tests.support.miner_keys import MinerKey

SERVER = "node-1"
NONCE = f"/servers/{SERVER}/nonce"
ATTEST = f"/servers/{SERVER}/attestation"


def reason(response: Response) -> tuple[int, str]:
    return response.status_code, decoded(response)["reason"]


def nonce_of(fleet: FleetEnv, key: MinerKey) -> str:
    response = fleet.signed("GET", NONCE, key)
    assert response.status_code == 200, response.text
    nonce: str = response.json()["nonce"]
    return nonce


@pytest.fixture
def bound(fleet: FleetEnv, alice: MinerKey) -> FleetEnv:
    """node-1, registered from a v2 boot of HOST_IP."""
    fleet.boot()
    assert fleet.register(alice, SERVER).status_code == 201
    return fleet


def test_the_boot_records_its_identity_key_and_registration_binds_it(
    fleet: FleetEnv, alice: MinerKey
) -> None:
    identity = new_identity()
    boot = fleet.boot(identity=identity)
    with session_scope(fleet.ctx.sessions) as session:
        row = session.get(BootAttestation, boot["attestation_id"])
        assert row is not None and row.identity_key == identity.public_key.hex()
    registered = fleet.register(alice, SERVER)
    assert registered.status_code == 201, registered.text
    assert registered.json()["identity_key"] == identity.public_key.hex()
    shown = fleet.signed("GET", f"/servers/{SERVER}", alice).json()
    assert shown["identity_key"] == identity.public_key.hex()


def test_the_booted_td_passes_and_the_attempt_records_its_key(
    bound: FleetEnv, alice: MinerKey
) -> None:
    response = bound.attest(alice, SERVER)
    assert response.status_code == 200, response.text
    assert response.json()["identity_bound"] is True
    with session_scope(bound.ctx.sessions) as session:
        row = session.get(RuntimeAttestation, response.json()["attestation_id"])
        assert row is not None
        assert row.identity_key == bound.identities[HOST_IP].public_key.hex()


def test_a_second_genuine_td_with_its_own_key_is_refused(bound: FleetEnv, alice: MinerKey) -> None:
    # Same platform, same approved image, a boot of its own (its own per-boot key): its
    # quote binds its own key, which is not the one node-1 was registered with.
    other = new_identity()
    bound.boot(ip="10.20.0.50", identity=other)
    response = bound.attest(alice, SERVER, identity=other)
    assert reason(response) == (403, "identity_mismatch")
    assert "another TD" in decoded(response)["message"]
    # The booted TD still passes.
    assert bound.attest(alice, SERVER).status_code == 200


def test_a_quote_naming_the_servers_public_key_signed_by_another_key_is_refused(
    bound: FleetEnv, alice: MinerKey
) -> None:
    # REPORTDATA is chosen by software and the public key is public: another TD can put
    # node-1's key in its quote, but cannot sign with node-1's private key.
    nonce = nonce_of(bound, alice)
    server_key = bound.identities[HOST_IP]
    body = bound.runtime_body(SERVER, nonce, identity=server_key)
    forged = new_identity().sign(
        runtime_signature_message(SERVER, bytes.fromhex(nonce), base64.b64decode(body["quote"]))
    )
    body["identity_signature"] = base64.b64encode(forged).decode()
    assert reason(bound.signed("POST", ATTEST, alice, body)) == (403, "identity_signature_invalid")


def test_a_signature_for_another_server_or_quote_is_refused(
    bound: FleetEnv, alice: MinerKey
) -> None:
    key = bound.identities[HOST_IP]
    nonce = nonce_of(bound, alice)
    body = bound.runtime_body(SERVER, nonce)
    quote = base64.b64decode(body["quote"])
    other_server = key.sign(runtime_signature_message("node-2", bytes.fromhex(nonce), quote))
    body["identity_signature"] = base64.b64encode(other_server).decode()
    assert reason(bound.signed("POST", ATTEST, alice, body)) == (403, "identity_signature_invalid")
    nonce = nonce_of(bound, alice)
    body = bound.runtime_body(SERVER, nonce)
    drifted = bound.runtime_profile.with_rtmr(2, "5c" * 48)
    another_quote = base64.b64decode(bound.runtime_quote(nonce, drifted, identity=key))
    signature = key.sign(runtime_signature_message(SERVER, bytes.fromhex(nonce), another_quote))
    body["identity_signature"] = base64.b64encode(signature).decode()
    assert reason(bound.signed("POST", ATTEST, alice, body)) == (403, "identity_signature_invalid")


def test_an_old_runtime_client_is_refused_before_its_nonce_is_spent(
    bound: FleetEnv, alice: MinerKey
) -> None:
    nonce = nonce_of(bound, alice)
    legacy = bound.runtime_body(SERVER, nonce, legacy=True)
    assert "identity_signature" not in legacy
    assert reason(bound.signed("POST", ATTEST, alice, legacy)) == (403, "identity_binding_missing")
    # A v1.1 quote (REPORTDATA[32:64] zeros) with a signature binds no key.
    key = bound.identities[HOST_IP]
    quote = base64.b64decode(legacy["quote"])
    signature = key.sign(runtime_signature_message(SERVER, bytes.fromhex(nonce), quote))
    legacy["identity_signature"] = base64.b64encode(signature).decode()
    assert reason(bound.signed("POST", ATTEST, alice, legacy)) == (403, "identity_mismatch")
    with session_scope(bound.ctx.sessions) as session:
        reasons = [r.reason for r in session.scalars(select(RuntimeAttestation))]
    assert sorted(reasons, key=str) == ["identity_binding_missing", "identity_mismatch"]


@pytest.mark.parametrize(
    "signature", ["not base64!", base64.b64encode(bytes(63)).decode(), ""], ids=str
)
def test_a_malformed_identity_signature_is_a_422(
    bound: FleetEnv, alice: MinerKey, signature: str
) -> None:
    nonce = nonce_of(bound, alice)
    body = {**bound.runtime_body(SERVER, nonce), "identity_signature": signature}
    response = bound.signed("POST", ATTEST, alice, body)
    assert reason(response) == (422, "request_invalid")
    assert "identity_signature" in decoded(response)["message"]
    # Refused before the nonce was spent.
    assert bound.signed("POST", ATTEST, alice, bound.runtime_body(SERVER, nonce)).status_code == 200


def test_a_server_registered_from_an_old_agents_boot_is_refused_by_default(
    fleet: FleetEnv, alice: MinerKey
) -> None:
    boot = fleet.boot(legacy=True)
    assert boot["image"] == "fleet-image", "a v1.1 agent's boot still unlocks"
    registered = fleet.register(alice, SERVER)
    assert registered.status_code == 201
    assert registered.json()["identity_key"] is None
    response = fleet.attest(alice, SERVER, legacy=True)
    assert reason(response) == (403, "server_identity_unknown")
    assert "register it again" in decoded(response)["message"]


def test_the_fallback_accepts_unbound_servers_and_still_binds_bound_ones(
    make_fleet: FleetFactory,
) -> None:
    env = make_fleet(runtime_attestation_require_identity=False)
    key = env.add_miner(MinerKey.from_seed(5))
    env.boot(legacy=True)
    assert env.register(key, SERVER).status_code == 201
    unbound = env.attest(key, SERVER, legacy=True)
    assert unbound.status_code == 200, unbound.text
    assert unbound.json()["identity_bound"] is False
    with session_scope(env.ctx.sessions) as session:
        row = session.get(RuntimeAttestation, unbound.json()["attestation_id"])
        assert row is not None and row.identity_key is None
    # A server bound to a key stays bound, whatever the setting.
    env.boot(ip="10.20.0.8")
    assert env.register(key, "node-2", ip="10.20.0.8").status_code == 201
    nonce = env.signed("GET", "/servers/node-2/nonce", key, ip="10.20.0.8").json()["nonce"]
    legacy = env.runtime_body("node-2", nonce, ip="10.20.0.8", legacy=True)
    response = env.signed("POST", "/servers/node-2/attestation", key, legacy, ip="10.20.0.8")
    assert reason(response) == (403, "identity_binding_missing")
    assert env.attest(key, "node-2", ip="10.20.0.8").json()["identity_bound"] is True


def test_one_boot_binds_one_server(fleet: FleetEnv, alice: MinerKey, bob: MinerKey) -> None:
    # A TD that attests its boot once cannot stand for two servers behind its address.
    fleet.boot()
    assert fleet.register(alice, SERVER).status_code == 201
    twin = fleet.register(alice, "node-twin")
    assert reason(twin) == (409, "conflict")
    assert SERVER not in decoded(twin)["message"]
    assert reason(fleet.register(bob, "node-bob")) == (409, "conflict")
    # Deleting the server frees its boot.
    assert fleet.signed("DELETE", f"/servers/{SERVER}", alice).status_code == 200
    assert fleet.register(alice, "node-twin").status_code == 201


def test_a_reboot_is_bound_by_registering_again(bound: FleetEnv, alice: MinerKey) -> None:
    first = bound.identities[HOST_IP]
    rebooted = new_identity()
    boot = bound.boot(identity=rebooted)
    # Until the miner registers again, the server stays bound to its first boot.
    assert reason(bound.attest(alice, SERVER, identity=rebooted)) == (403, "identity_mismatch")
    again = bound.register(alice, SERVER)
    assert again.status_code == 201, again.text
    assert again.json()["identity_key"] == rebooted.public_key.hex()
    assert again.json()["boot_attestation"]["attestation_id"] == boot["attestation_id"]
    assert bound.attest(alice, SERVER, identity=rebooted).status_code == 200
    assert reason(bound.attest(alice, SERVER, identity=first)) == (403, "identity_mismatch")


def test_registering_again_leaves_a_server_alone_when_the_newest_boot_is_anothers(
    bound: FleetEnv, alice: MinerKey
) -> None:
    # Two servers behind one address: node-2 boots and registers after node-1.
    first = bound.identities[HOST_IP]
    bound.boot()
    assert bound.register(alice, "node-2").status_code == 201
    # node-1's registration, sent again as it was, still succeeds and keeps its boot.
    again = bound.register(alice, SERVER)
    assert again.status_code == 201, again.text
    assert again.json()["identity_key"] == first.public_key.hex()
    assert bound.attest(alice, SERVER, identity=first).status_code == 200


def test_registering_again_never_drops_the_binding_for_an_old_agents_boot(
    bound: FleetEnv, alice: MinerKey
) -> None:
    key = bound.identities[HOST_IP].public_key.hex()
    bound.boot(legacy=True)
    again = bound.register(alice, SERVER)
    assert again.status_code == 201
    assert again.json()["identity_key"] == key


def test_a_v2_boot_with_a_v1_report_data_is_refused(fleet: FleetEnv) -> None:
    client = fleet.client()
    nonce = bytes.fromhex(client.get("/servers/nonce").json()["nonce"])
    hpke = X25519PrivateKey.generate().public_key().public_bytes_raw()
    identity = new_identity().public_key
    quote = fleet.state.make_quote(nonce + hashlib.sha256(hpke).digest(), fleet.boot_profile)
    body = {
        "quote": base64.b64encode(quote).decode(),
        "public_key": base64.b64encode(hpke).decode(),
        "identity_key": base64.b64encode(identity).decode(),
    }
    response = client.post(
        "/servers/boot/attestation", headers={"X-Chutes-Nonce": nonce.hex()}, json=body
    )
    assert reason(response) == (403, "report_data_mismatch")
    assert "identity_key" in decoded(response)["message"]
    # The same identity key bound the v2 way unlocks.
    nonce = bytes.fromhex(client.get("/servers/nonce").json()["nonce"])
    report_data = boot_report_data(nonce, Kem.X25519, hpke, identity)
    body["quote"] = base64.b64encode(
        fleet.state.make_quote(report_data, fleet.boot_profile)
    ).decode()
    response = client.post(
        "/servers/boot/attestation", headers={"X-Chutes-Nonce": nonce.hex()}, json=body
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "identity_key",
    ["not base64!", base64.b64encode(bytes(31)).decode(), base64.b64encode(bytes(33)).decode()],
)
def test_a_malformed_identity_key_is_a_422_before_the_nonce_is_spent(
    fleet: FleetEnv, identity_key: str
) -> None:
    client = fleet.client()
    nonce = client.get("/servers/nonce").json()["nonce"]
    hpke = X25519PrivateKey.generate().public_key().public_bytes_raw()
    body = {
        "quote": base64.b64encode(fleet.state.make_quote(bytes(64))).decode(),
        "public_key": base64.b64encode(hpke).decode(),
        "identity_key": identity_key,
    }
    response = client.post(
        "/servers/boot/attestation", headers={"X-Chutes-Nonce": nonce}, json=body
    )
    assert reason(response) == (422, "identity_key_invalid")
    with session_scope(fleet.ctx.sessions) as session:
        row = session.scalars(select(BootAttestation)).one()
        assert row.reason == "identity_key_invalid"
        assert row.bookkeeping is None, "identity_key is not bookkeeping"


def test_the_bound_key_is_unique_in_the_database(bound: FleetEnv) -> None:
    from sqlalchemy.exc import IntegrityError

    key = bound.identities[HOST_IP].public_key.hex()
    with pytest.raises(IntegrityError), session_scope(bound.ctx.sessions) as session:
        server = session.get(Server, SERVER)
        assert server is not None
        session.add(
            Server(
                id="node-copy",
                miner_hotkey=server.miner_hotkey,
                name="copy",
                host=server.host,
                created_at=server.created_at,
                identity_key=key,
            )
        )
        session.flush()
