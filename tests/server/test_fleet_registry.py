"""The server registry over HTTP, on SQLite and PostgreSQL, with real sr25519 keys."""

from __future__ import annotations

import json

from sqlalchemy import select

from tdx_boot_attest.server.db.engine import session_scope
from tdx_boot_attest.server.db.fleet import RuntimeAttestation, ServerGpu
from tdx_boot_attest.server.db.models import Nonce
from tests.conftest import REPO_ROOT
from tests.support.fleet_env import (
    HOST_IP,
    IMAGE_NAME,
    FleetEnv,
    decoded,
    gpu,
    server_args,
)
from tests.support.fleet_fixtures import FleetFactory
from tests.support.miner_keys import MinerKey


def test_register_after_boot_links_the_boot_attestation(fleet: FleetEnv, alice: MinerKey) -> None:
    boot = fleet.boot()
    response = fleet.register(alice, "node-1")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["server_id"] == "node-1"
    assert body["name"] == "node-1"
    assert body["host"] == HOST_IP
    assert body["miner_hotkey"] == alice.hotkey
    assert body["image"] == IMAGE_NAME
    assert body["boot_attestation"]["attestation_id"] == boot["attestation_id"]
    assert body["boot_attestation"]["client_ip"] == HOST_IP
    assert [g["device_index"] for g in body["gpus"]] == [0, 1]
    assert body["gpus"][0] == gpu(0, "node-1")


def test_register_with_name_and_list_and_get(fleet: FleetEnv, alice: MinerKey) -> None:
    fleet.boot()
    fleet.boot(ip="10.20.0.8")
    args = {**server_args("node-a"), "name": "rack 4 / slot 2"}
    assert fleet.signed("POST", "/servers/", alice, args).status_code == 201
    assert fleet.register(alice, "node-b", ip="10.20.0.8").status_code == 201
    listing = fleet.signed("GET", "/servers/", alice)
    assert listing.status_code == 200
    assert [(s["server_id"], s["name"]) for s in listing.json()] == [
        ("node-a", "rack 4 / slot 2"),
        ("node-b", "node-b"),
    ]
    one = fleet.signed("GET", "/servers/node-b", alice)
    assert one.status_code == 200
    assert one.json() == listing.json()[1]


def test_registration_from_another_ip_than_the_request_is_allowed(
    fleet: FleetEnv, alice: MinerKey
) -> None:
    # The miner's CLI may run anywhere; what counts is the host's boot history.
    fleet.boot(ip="10.20.0.9")
    response = fleet.signed(
        "POST", "/servers/", alice, server_args("node-9", "10.20.0.9"), ip="192.0.2.1"
    )
    assert response.status_code == 201, response.text


def test_ipv6_host_is_normalised(fleet: FleetEnv, alice: MinerKey) -> None:
    fleet.boot(ip="2001:db8::7")
    args = server_args("node-v6", "2001:0db8:0000::0007")
    response = fleet.signed("POST", "/servers/", alice, args)
    assert response.status_code == 201, response.text
    assert response.json()["host"] == "2001:db8::7"


def test_registration_without_a_boot_attestation_is_refused(
    fleet: FleetEnv, alice: MinerKey
) -> None:
    response = fleet.register(alice, "node-1")
    assert response.status_code == 403
    assert decoded(response)["reason"] == "no_recent_boot_attestation"
    assert HOST_IP in decoded(response)["message"]


def test_a_boot_attestation_from_another_ip_does_not_count(
    fleet: FleetEnv, alice: MinerKey
) -> None:
    fleet.boot(ip="10.99.0.1")
    response = fleet.register(alice, "node-1")
    assert decoded(response)["reason"] == "no_recent_boot_attestation"


def test_a_refused_boot_attestation_does_not_count(fleet: FleetEnv, alice: MinerKey) -> None:
    client = fleet.client()
    nonce = client.get("/servers/nonce").json()["nonce"]
    refused = client.post(
        "/servers/boot/attestation",
        headers={"X-Chutes-Nonce": nonce},
        json={"quote": fleet.runtime_quote(nonce), "public_key": "A" * 43 + "="},
    )
    assert refused.status_code == 403
    assert decoded(fleet.register(alice, "node-1"))["reason"] == "no_recent_boot_attestation"


def test_a_boot_attestation_older_than_the_window_does_not_count(
    fleet: FleetEnv, alice: MinerKey
) -> None:
    fleet.boot()
    fleet.clock.advance(3601)
    response = fleet.register(alice, "node-1")
    assert response.status_code == 403
    assert decoded(response)["reason"] == "no_recent_boot_attestation"
    assert "3600 s" in decoded(response)["message"]


def test_the_boot_requirement_can_be_switched_off(make_fleet: FleetFactory) -> None:
    env = make_fleet(registration_requires_boot_attestation=False)
    key = env.add_miner(MinerKey.from_seed(5))
    response = env.register(key, "node-1")
    assert response.status_code == 201, response.text
    assert response.json()["image"] is None
    assert response.json()["boot_attestation"] is None


def test_reregistering_the_same_server_is_idempotent(fleet: FleetEnv, alice: MinerKey) -> None:
    fleet.boot()
    first = fleet.register(alice, "node-1")
    second = fleet.register(alice, "node-1")
    assert second.status_code == 201
    assert second.json() == first.json()
    assert len(fleet.signed("GET", "/servers/", alice).json()) == 1


def test_reregistering_with_other_gpus_is_a_conflict(fleet: FleetEnv, alice: MinerKey) -> None:
    fleet.boot()
    fleet.register(alice, "node-1", gpus=2)
    response = fleet.register(alice, "node-1", gpus=3)
    assert response.status_code == 409
    assert decoded(response)["reason"] == "conflict"


def test_an_id_taken_by_another_miner_is_a_conflict(
    fleet: FleetEnv, alice: MinerKey, bob: MinerKey
) -> None:
    fleet.boot()
    fleet.register(alice, "node-1")
    response = fleet.register(bob, "node-1")
    assert response.status_code == 409
    assert "another miner" in decoded(response)["message"]


def test_a_gpu_registered_to_another_server_is_a_conflict(
    fleet: FleetEnv, alice: MinerKey, bob: MinerKey
) -> None:
    fleet.boot()
    fleet.register(alice, "node-1")
    stolen = {**server_args("node-2"), "gpus": [gpu(1, "node-1")]}
    for miner in (alice, bob):
        response = fleet.signed("POST", "/servers/", miner, stolen)
        assert response.status_code == 409
        assert gpu(1, "node-1")["uuid"] in decoded(response)["message"]


def test_miners_never_see_each_others_servers(
    fleet: FleetEnv, alice: MinerKey, bob: MinerKey
) -> None:
    fleet.boot()
    fleet.register(alice, "node-1")
    assert fleet.signed("GET", "/servers/", bob).json() == []
    for method, path, payload in [
        ("GET", "/servers/node-1", None),
        ("DELETE", "/servers/node-1", None),
        ("GET", "/servers/node-1/nonce", None),
        ("POST", "/servers/node-1/attestation", {"quote": "AAAA"}),
        ("GET", "/servers/node-1/attestation/status", None),
    ]:
        theirs = fleet.signed(method, path, bob, payload)
        missing = fleet.signed(method, path.replace("node-1", "node-x"), bob, payload)
        assert theirs.status_code == 404, (method, path, theirs.text)
        # Same answer as for an id that does not exist: ids do not leak.
        assert decoded(theirs)["reason"] == decoded(missing)["reason"] == "not_found"
        assert decoded(theirs)["message"].replace("node-1", "node-x") == decoded(missing)["message"]
    assert fleet.signed("GET", "/servers/node-1", alice).status_code == 200


def test_bearer_token_registers_and_lists(fleet: FleetEnv, alice: MinerKey) -> None:
    fleet.boot()
    token = fleet.issue_token(alice)
    created = fleet.with_token("POST", "/servers/", token, server_args("node-t"))
    assert created.status_code == 201, created.text
    assert created.json()["miner_hotkey"] == alice.hotkey
    listing = fleet.with_token("GET", "/servers/", token)
    assert [s["server_id"] for s in listing.json()] == ["node-t"]


def test_delete_removes_server_gpus_and_nonces_and_keeps_the_audit(
    fleet: FleetEnv, alice: MinerKey, bob: MinerKey
) -> None:
    fleet.boot()
    fleet.register(alice, "node-1")
    assert fleet.attest(alice, "node-1").status_code == 200
    pending = fleet.signed("GET", "/servers/node-1/nonce", alice).json()["nonce"]

    response = fleet.signed("DELETE", "/servers/node-1", alice)
    assert response.status_code == 200
    assert response.json() == {
        "server_id": "node-1",
        "deleted": True,
        "runtime_attestations_kept": 1,
    }
    assert fleet.signed("GET", "/servers/node-1", alice).status_code == 404
    assert fleet.signed("DELETE", "/servers/node-1", alice).status_code == 404
    with session_scope(fleet.ctx.sessions) as session:
        assert session.scalars(select(ServerGpu)).all() == []
        assert session.get(Nonce, pending) is None
        (row,) = session.scalars(select(RuntimeAttestation)).all()
        assert row.server_id == "node-1"
        assert row.verified
        assert row.server_deleted_at == fleet.clock()

    # The GPUs are free again and the id starts a fresh history.
    assert fleet.register(bob, "node-1").status_code == 201
    status = fleet.signed("GET", "/servers/node-1/attestation/status", bob).json()
    assert status["attestation_status"] == "never_attested"
    assert status["last_attestation"] is None


def test_gpu_uuids_are_stored_in_one_canonical_form(
    fleet: FleetEnv, alice: MinerKey, bob: MinerKey
) -> None:
    fleet.boot()
    args = server_args("node-1")
    args["gpus"][0]["uuid"] = "gpu-8D6F0A1B-77C2-4E11-9D0F-AB12CD34EF56"
    response = fleet.signed("POST", "/servers/", alice, args)
    assert response.status_code == 201, response.text
    assert response.json()["gpus"][0]["uuid"] == "GPU-8d6f0a1b-77c2-4e11-9d0f-ab12cd34ef56"
    # The same GPU in another case is the same GPU: taken by node-1.
    fleet.boot(ip="10.20.0.8")
    other = server_args("node-2", "10.20.0.8")
    other["gpus"][0]["uuid"] = "GPU-8d6f0a1b-77c2-4e11-9d0f-ab12cd34ef56"
    taken = fleet.signed("POST", "/servers/", bob, other, ip="10.20.0.8")
    assert (taken.status_code, decoded(taken)["reason"]) == (409, "conflict")
    # Registering node-1 again with the uuid in yet another case is the same registration.
    args["gpus"][0]["uuid"] = "Gpu-8d6f0a1b-77C2-4e11-9d0f-ab12cd34ef56"
    again = fleet.signed("POST", "/servers/", alice, args)
    assert again.status_code == 201, again.text
    assert again.json()["created_at"] == response.json()["created_at"]


def test_the_chutes_style_body_of_the_fleet_guide_registers(
    fleet: FleetEnv, alice: MinerKey
) -> None:
    """The registration body shown in docs/fleet.md, exactly as written there."""
    text = (REPO_ROOT / "docs" / "fleet.md").read_text(encoding="utf-8")
    block = text.split("POST /servers/\n", 1)[1].split("```", 1)[0]
    body = json.loads(block)
    fleet.boot(ip=body["host"])
    response = fleet.signed("POST", "/servers/", alice, body, ip=body["host"])
    assert response.status_code == 201, response.text
    assert response.json()["gpus"][0]["uuid"] == body["gpus"][0]["uuid"]
