"""Runtime attestation and its status over HTTP, on SQLite and PostgreSQL.

The quotes come from the simulated platform and pass the same DCAP verification as at
boot; the image's runtime measurement set differs from its boot set in RTMR3.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from httpx import Response
from sqlalchemy import select

from tdx_boot_attest.server.db.engine import session_scope
from tdx_boot_attest.server.db.fleet import RuntimeAttestation
from tdx_boot_attest.server.images import Profile as ImageProfile
from tdx_boot_attest.server.images import ReferenceEvents, add_image, retire_image
from tests.support.eventlogs import Components, direct_boot_events, direct_boot_log, profile_for
from tests.support.fleet_env import HOST_IP, IMAGE_NAME, FleetEnv, decoded
from tests.support.fleet_fixtures import FleetFactory
from tests.support.miner_keys import MinerKey
from tests.support.sim_server import new_passphrase

SERVER = "node-1"
STATUS = f"/servers/{SERVER}/attestation/status"
ATTEST = f"/servers/{SERVER}/attestation"
NONCE = f"/servers/{SERVER}/nonce"
EVENT_LOGS = Path(__file__).resolve().parent.parent / "assets" / "eventlog"


@pytest.fixture
def registered(fleet: FleetEnv, alice: MinerKey) -> FleetEnv:
    fleet.boot()
    assert fleet.register(alice, SERVER).status_code == 201
    return fleet


def status_of(fleet: FleetEnv, key: MinerKey) -> dict[str, object]:
    response = fleet.signed("GET", STATUS, key)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def post_body(
    fleet: FleetEnv, key: MinerKey, body: dict[str, str], ip: str | None = None
) -> Response:
    return fleet.signed("POST", ATTEST, key, body, ip=ip or HOST_IP)


def test_runtime_nonce_is_bound_to_the_server(registered: FleetEnv, alice: MinerKey) -> None:
    response = registered.signed("GET", NONCE, alice)
    assert response.status_code == 200
    body = response.json()
    assert len(body["nonce"]) == 64
    assert body["server_id"] == SERVER
    assert body["expires_at"].endswith("Z")


def test_runtime_attestation_succeeds_and_is_recorded(
    registered: FleetEnv, alice: MinerKey
) -> None:
    assert status_of(registered, alice)["attestation_status"] == "never_attested"
    response = registered.attest(alice, SERVER)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "verified"
    assert body["image"] == IMAGE_NAME
    status = status_of(registered, alice)
    assert status["attestation_status"] == "verified"
    assert status["last_attestation"] == {
        "attestation_id": body["attestation_id"],
        "verified": True,
        "created_at": body["verified_at"],
        "verified_at": body["verified_at"],
        "reason": None,
        "message": None,
        "differences": None,
    }
    assert status["image"] == IMAGE_NAME
    assert status["name"] == SERVER
    with session_scope(registered.ctx.sessions) as session:
        row = session.get(RuntimeAttestation, body["attestation_id"])
        assert row is not None
        assert row.rtmr3 == registered.runtime_profile.rtmr3
        assert row.tcb_status == "UpToDate"


def test_boot_measurements_do_not_pass_at_runtime(registered: FleetEnv, alice: MinerKey) -> None:
    response = registered.attest(alice, SERVER, registered.boot_profile)
    assert response.status_code == 403
    assert decoded(response)["reason"] == "measurement_mismatch"
    assert decoded(response)["message"].startswith("rtmr3 differs")


def test_a_nonce_of_another_server_is_a_mismatch(registered: FleetEnv, alice: MinerKey) -> None:
    registered.boot(ip="10.20.0.8")
    assert registered.register(alice, "node-2", ip="10.20.0.8").status_code == 201
    other = registered.signed("GET", "/servers/node-2/nonce", alice, ip="10.20.0.8")
    response = post_body(registered, alice, registered.runtime_body(SERVER, other.json()["nonce"]))
    assert response.status_code == 403
    assert decoded(response)["reason"] == "nonce_mismatch"
    # The other server's nonce was not consumed by the refusal.
    body = registered.runtime_body("node-2", other.json()["nonce"], ip="10.20.0.8")
    again = registered.signed("POST", "/servers/node-2/attestation", alice, body, ip="10.20.0.8")
    assert again.status_code == 200, again.text


def test_a_boot_nonce_is_a_mismatch(registered: FleetEnv, alice: MinerKey) -> None:
    boot_nonce = registered.client().get("/servers/nonce").json()["nonce"]
    response = post_body(registered, alice, registered.runtime_body(SERVER, boot_nonce))
    assert decoded(response)["reason"] == "nonce_mismatch"


def test_nonce_unknown_used_and_expired(registered: FleetEnv, alice: MinerKey) -> None:
    unknown = post_body(registered, alice, registered.runtime_body(SERVER, "ab" * 32))
    assert (unknown.status_code, decoded(unknown)["reason"]) == (401, "nonce_unknown")

    nonce = registered.signed("GET", NONCE, alice).json()["nonce"]
    assert post_body(registered, alice, registered.runtime_body(SERVER, nonce)).status_code == 200
    used = post_body(registered, alice, registered.runtime_body(SERVER, nonce))
    assert (used.status_code, decoded(used)["reason"]) == (401, "nonce_used")

    nonce = registered.signed("GET", NONCE, alice).json()["nonce"]
    registered.clock.advance(601)
    expired = post_body(registered, alice, registered.runtime_body(SERVER, nonce))
    assert (expired.status_code, decoded(expired)["reason"]) == (401, "nonce_expired")


def test_caller_must_be_the_servers_host(registered: FleetEnv, alice: MinerKey) -> None:
    nonce = registered.signed("GET", NONCE, alice).json()["nonce"]
    body = registered.runtime_body(SERVER, nonce)
    response = post_body(registered, alice, body, ip="10.20.0.99")
    assert response.status_code == 403
    assert decoded(response)["reason"] == "forbidden"
    assert "10.20.0.99" in decoded(response)["message"]
    # Refused before the nonce was touched: the host can still use it.
    assert post_body(registered, alice, body).status_code == 200


def test_host_check_can_be_switched_off(make_fleet: FleetFactory) -> None:
    env = make_fleet(runtime_attestation_require_host_ip=False)
    key = env.add_miner(MinerKey.from_seed(8))
    env.boot()
    env.register(key, SERVER)
    assert env.attest(key, SERVER, ip="198.51.100.4").status_code == 200


def test_debug_td_is_refused(registered: FleetEnv, alice: MinerKey) -> None:
    nonce = registered.signed("GET", NONCE, alice).json()["nonce"]
    response = post_body(registered, alice, registered.runtime_body(SERVER, nonce, debug=True))
    assert (response.status_code, decoded(response)["reason"]) == (403, "debug_td")


def test_a_tampered_quote_fails_dcap(registered: FleetEnv, alice: MinerKey) -> None:
    nonce = registered.signed("GET", NONCE, alice).json()["nonce"]
    body = registered.runtime_body(SERVER, nonce)
    raw = bytearray(base64.b64decode(body["quote"]))
    raw[200] ^= 1  # inside MRTD: the quote signature no longer covers it
    body["quote"] = base64.b64encode(bytes(raw)).decode()
    response = post_body(registered, alice, body)
    assert response.status_code == 403
    assert decoded(response)["reason"] == "quote_signature_invalid"


def test_retired_image_cannot_be_matched(registered: FleetEnv, alice: MinerKey) -> None:
    with session_scope(registered.ctx.sessions) as session:
        retire_image(session, IMAGE_NAME, registered.clock())
    response = registered.attest(alice, SERVER)
    assert (response.status_code, decoded(response)["reason"]) == (403, "no_image_registered")


def test_server_without_boot_image_cannot_attest(make_fleet: FleetFactory) -> None:
    env = make_fleet(registration_requires_boot_attestation=False)
    key = env.add_miner(MinerKey.from_seed(8))
    env.register(key, SERVER)
    # No boot: no identity key to hold runtime evidence against.
    response = env.attest(key, SERVER)
    assert (response.status_code, decoded(response)["reason"]) == (403, "server_identity_unknown")
    assert status_of(env, key)["attestation_status"] == "failed"


def test_server_without_boot_image_cannot_attest_unbound_either(make_fleet: FleetFactory) -> None:
    env = make_fleet(
        registration_requires_boot_attestation=False, runtime_attestation_require_identity=False
    )
    key = env.add_miner(MinerKey.from_seed(8))
    env.register(key, SERVER)
    response = env.attest(key, SERVER)
    assert (response.status_code, decoded(response)["reason"]) == (403, "no_image_registered")


def test_any_runtime_register_is_not_checked(make_fleet: FleetFactory) -> None:
    from tdx_boot_attest.server.db.models import Image

    env = make_fleet()
    with session_scope(env.ctx.sessions) as session:
        image = session.scalars(select(Image)).one()
        image.runtime_rtmr3 = "any"
    key = env.add_miner(MinerKey.from_seed(8))
    env.boot()
    env.register(key, SERVER)
    assert env.attest(key, SERVER, env.runtime_profile.with_rtmr(3, "5c" * 48)).status_code == 200
    drifted = env.attest(key, SERVER, env.runtime_profile.with_rtmr(2, "5c" * 48))
    assert decoded(drifted)["message"].startswith("rtmr2 differs")


def test_failed_attempts_are_recorded_with_their_reason(
    registered: FleetEnv, alice: MinerKey
) -> None:
    registered.attest(alice, SERVER, registered.boot_profile)
    with session_scope(registered.ctx.sessions) as session:
        (row,) = session.scalars(select(RuntimeAttestation)).all()
    assert not row.verified
    assert row.verified_at is None
    assert row.reason == "measurement_mismatch"
    assert row.miner_hotkey == alice.hotkey


@pytest.mark.slow
def test_runtime_loop_then_drift_then_stale(registered: FleetEnv, alice: MinerKey) -> None:
    """100 attestations pass; an RTMR drifts and the status fails; time passes: stale."""
    for round_number in range(1, 101):
        registered.clock.advance(30)
        response = registered.attest(alice, SERVER)
        assert response.status_code == 200, response.text
        if round_number % 10 == 0:
            assert status_of(registered, alice)["attestation_status"] == "verified"
    last_success = response.json()["verified_at"]

    registered.clock.advance(30)
    drifted = registered.runtime_profile.with_rtmr(2, "d1" * 48)
    refusal = registered.attest(alice, SERVER, drifted)
    assert refusal.status_code == 403
    status = status_of(registered, alice)
    assert status["attestation_status"] == "failed"
    last = status["last_attestation"]
    assert isinstance(last, dict)
    assert last["verified"] is False
    assert last["reason"] == "measurement_mismatch"
    assert "rtmr2" in last["message"]
    assert status["last_verified_at"] == last_success

    registered.clock.advance(3600 - 30)
    assert status_of(registered, alice)["attestation_status"] == "failed"
    registered.clock.advance(31)
    assert status_of(registered, alice)["attestation_status"] == "stale"

    # A fresh success brings it back.
    assert registered.attest(alice, SERVER).status_code == 200
    assert status_of(registered, alice)["attestation_status"] == "verified"
    with session_scope(registered.ctx.sessions) as session:
        rows = session.scalars(select(RuntimeAttestation)).all()
    assert sum(r.verified for r in rows) == 101
    assert len(rows) == 102


def test_status_is_stale_after_the_configured_interval(make_fleet: FleetFactory) -> None:
    env = make_fleet(runtime_attestation_stale_seconds=60)
    key = env.add_miner(MinerKey.from_seed(8))
    env.boot()
    env.register(key, SERVER)
    env.attest(key, SERVER)
    env.clock.advance(60)
    assert status_of(env, key)["attestation_status"] == "verified"
    env.clock.advance(1)
    body = status_of(env, key)
    assert body["attestation_status"] == "stale"
    assert body["stale_after_seconds"] == 60


def test_runtime_refusal_explained_by_the_event_log_shows_in_the_status(
    fleet: FleetEnv, alice: MinerKey
) -> None:
    golden = Components()
    events = direct_boot_events(golden)
    profile = profile_for(events)
    with session_scope(fleet.ctx.sessions) as session:
        add_image(
            session,
            fleet.ctx.master_key,
            "evented",
            ImageProfile(mrtd=profile.mrtd, boot_rtmrs=profile.rtmrs, runtime_rtmrs=profile.rtmrs),
            passphrase=new_passphrase(),
            now=fleet.clock(),
            reference=ReferenceEvents(tuple(events), "test golden boot"),
        )
    assert fleet.boot(profile=profile)["image"] == "evented"
    assert fleet.register(alice, SERVER).status_code == 201

    def attest(components: Components) -> Response:
        nonce = fleet.signed("GET", NONCE, alice).json()["nonce"]
        body = fleet.runtime_body(
            SERVER,
            nonce,
            profile_for(direct_boot_events(components)),
            event_log=direct_boot_log(components),
        )
        return fleet.signed("POST", ATTEST, alice, body)

    assert attest(golden).status_code == 200
    drifted = attest(Components(initrd="initrd rebuilt"))
    body = decoded(drifted)
    assert body["reason"] == "measurement_mismatch"
    assert body["message"].startswith('rtmr2 differs from image evented: "Linux initrd" (initrd) ')
    status = status_of(fleet, alice)
    assert status["attestation_status"] == "failed"
    last = status["last_attestation"]
    assert isinstance(last, dict)
    assert last["message"] == body["message"]
    (difference,) = last["differences"]
    assert (difference["rtmr"], difference["component"]) == ("rtmr2", "initrd")
    with session_scope(fleet.ctx.sessions) as session:
        row = session.get(RuntimeAttestation, last["attestation_id"])
        assert row is not None and row.event_log == direct_boot_log(
            Components(initrd="initrd rebuilt")
        )
    other_log = base64.b64encode((EVENT_LOGS / "gce-cos113.ccel").read_bytes()[:18101]).decode()
    nonce = fleet.signed("GET", NONCE, alice).json()["nonce"]
    body = {**fleet.runtime_body(SERVER, nonce, profile), "event_log": other_log}
    mismatch = fleet.signed("POST", ATTEST, alice, body)
    assert decoded(mismatch)["reason"] == "event_log_mismatch"
