"""Miner authentication over HTTP on SQLite and PostgreSQL: every 401 cause, tokens, replicas."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select

from tdx_boot_attest.server.app import create_app
from tdx_boot_attest.server.db.engine import session_scope
from tdx_boot_attest.server.db.fleet import UsedSignature
from tests.support.fleet_env import HOST_IP, FleetEnv, decoded, server_args
from tests.support.fleet_fixtures import FleetFactory
from tests.support.miner_keys import MinerKey, json_body


def refused(response: Response, fragment: str) -> None:
    assert response.status_code == 401, response.text
    body = decoded(response)
    assert body["reason"] == "unauthenticated"
    assert fragment in body["message"], body["message"]
    assert body["detail"] == f"unauthenticated: {body['message']}"


def test_signed_request_succeeds(fleet: FleetEnv, alice: MinerKey) -> None:
    assert fleet.signed("GET", "/servers/", alice).status_code == 200


def test_missing_credentials(fleet: FleetEnv, alice: MinerKey) -> None:
    refused(fleet.client().get("/servers/"), "credentials missing")


@pytest.mark.parametrize(
    ("drop", "missing"),
    [
        (("X-Chutes-Signature",), "X-Chutes-Signature"),
        (("X-Chutes-Nonce",), "X-Chutes-Nonce"),
        (("X-Chutes-Hotkey",), "X-Chutes-Hotkey"),
        (("X-Chutes-Nonce", "X-Chutes-Signature"), "X-Chutes-Nonce, X-Chutes-Signature"),
    ],
)
def test_partial_credentials(
    fleet: FleetEnv, alice: MinerKey, drop: tuple[str, ...], missing: str
) -> None:
    headers = alice.headers(fleet.clock.unix)
    for name in drop:
        del headers[name]
    refused(fleet.client().get("/servers/", headers=headers), f"missing {missing}")


def test_bad_signature(fleet: FleetEnv, alice: MinerKey) -> None:
    headers = alice.headers(fleet.clock.unix)
    headers["X-Chutes-Signature"] = MinerKey.from_seed(9).sign(fleet.clock.unix)
    refused(fleet.client().get("/servers/", headers=headers), "does not verify")


def test_signature_over_another_body(fleet: FleetEnv, alice: MinerKey) -> None:
    signed_for = json_body({"id": "node-1"})
    headers = alice.headers(fleet.clock.unix, signed_for)
    headers["Content-Type"] = "application/json"
    response = fleet.client().post(
        "/servers/", content=json_body({"id": "node-2"}), headers=headers
    )
    refused(response, "does not verify")


def test_get_signed_with_a_body_digest_is_refused(fleet: FleetEnv, alice: MinerKey) -> None:
    # A GET has no body, so its signature must cover the purpose string "tee".
    headers = alice.headers(fleet.clock.unix, b"{}")
    refused(fleet.client().get("/servers/", headers=headers), "does not verify")


def test_malformed_signature_and_hotkey(fleet: FleetEnv, alice: MinerKey) -> None:
    headers = alice.headers(fleet.clock.unix)
    refused(
        fleet.client().get("/servers/", headers={**headers, "X-Chutes-Signature": "nothex"}),
        "not hexadecimal",
    )
    refused(
        fleet.client().get("/servers/", headers={**headers, "X-Chutes-Hotkey": "5notanaddress"}),
        "X-Chutes-Hotkey",
    )


@pytest.mark.parametrize("offset", [-601, 601])
def test_stale_timestamp(fleet: FleetEnv, alice: MinerKey, offset: int) -> None:
    response = fleet.signed("GET", "/servers/", alice, timestamp=fleet.clock.unix + offset)
    refused(response, "allowed: 600 s")


def test_non_numeric_timestamp(fleet: FleetEnv, alice: MinerKey) -> None:
    headers = alice.headers("soon")
    refused(fleet.client().get("/servers/", headers=headers), "unix timestamp")


def test_replayed_signature(fleet: FleetEnv, alice: MinerKey) -> None:
    headers = alice.headers(fleet.clock.unix)
    assert fleet.client().get("/servers/", headers=headers).status_code == 200
    refused(fleet.client().get("/servers/", headers=headers), "already used")


def test_replay_is_refused_by_another_replica(fleet: FleetEnv, alice: MinerKey) -> None:
    other = create_app(fleet.ctx.settings, fleet.clock, lambda fmspc, ca: "")
    headers = alice.headers(fleet.clock.unix)
    assert fleet.client().get("/servers/", headers=headers).status_code == 200
    try:
        with TestClient(other, client=(HOST_IP, 40000)) as replica:
            refused(replica.get("/servers/", headers=headers), "already used")
    finally:
        other.state.ctx.engine.dispose()


def test_replay_records_expire_with_the_window(fleet: FleetEnv, alice: MinerKey) -> None:
    assert fleet.signed("GET", "/servers/", alice).status_code == 200
    fleet.clock.advance(601 + 60)
    assert fleet.signed("GET", "/servers/", alice).status_code == 200
    with session_scope(fleet.ctx.sessions) as session:
        assert session.scalar(select(func.count()).select_from(UsedSignature)) == 1


def test_unregistered_hotkey(fleet: FleetEnv) -> None:
    stranger = MinerKey.from_seed(31337)
    refused(fleet.signed("GET", "/servers/", stranger), "not a registered miner")


def test_bad_bearer_token(fleet: FleetEnv, alice: MinerKey) -> None:
    fleet.issue_token(alice)
    refused(fleet.with_token("GET", "/servers/", "tdxa_not-a-token"), "bearer token is not valid")
    response = fleet.client().get("/servers/", headers={"Authorization": "Basic YWxpY2U6cHc="})
    refused(response, "Bearer scheme")


def test_good_bearer_token(fleet: FleetEnv, alice: MinerKey) -> None:
    token = fleet.issue_token(alice)
    assert fleet.with_token("GET", "/servers/", token).status_code == 200
    # Bearer tokens are not single-use.
    assert fleet.with_token("GET", "/servers/", token).status_code == 200


def test_token_and_signature_together_are_refused(fleet: FleetEnv, alice: MinerKey) -> None:
    token = fleet.issue_token(alice)
    headers = {**alice.headers(fleet.clock.unix), "Authorization": f"Bearer {token}"}
    refused(fleet.client().get("/servers/", headers=headers), "not both")


def test_window_is_a_setting(make_fleet: FleetFactory) -> None:
    env = make_fleet(auth_window_seconds=30)
    key = env.add_miner(MinerKey.from_seed(77))
    refused(env.signed("GET", "/servers/", key, timestamp=env.clock.unix - 31), "allowed: 30 s")
    assert env.signed("GET", "/servers/", key, timestamp=env.clock.unix - 29).status_code == 200


def test_every_fleet_endpoint_requires_authentication(fleet: FleetEnv) -> None:
    client = fleet.client()
    for method, path in [
        ("POST", "/servers/"),
        ("GET", "/servers/"),
        ("GET", "/servers/node-1"),
        ("DELETE", "/servers/node-1"),
        ("GET", "/servers/node-1/nonce"),
        ("POST", "/servers/node-1/attestation"),
        ("GET", "/servers/node-1/attestation/status"),
    ]:
        refused(client.request(method, path, json={} if method == "POST" else None), "missing")


def test_an_intercepted_signed_get_cannot_become_a_delete(fleet: FleetEnv, alice: MinerKey) -> None:
    fleet.boot()
    assert fleet.register(alice, "node-1").status_code == 201
    # Signed for GET /servers/node-1 and never sent: as a DELETE it does not verify.
    headers = alice.headers(fleet.clock.unix, b"", "GET", "/servers/node-1")
    refused(fleet.client().delete("/servers/node-1", headers=headers), "body, method and path")
    assert fleet.client().get("/servers/node-1", headers=headers).status_code == 200
    # The Chutes form does not cover the method: the reason the stronger form exists.
    chutes = alice.headers(fleet.clock.unix)
    assert fleet.client().delete("/servers/node-1", headers=chutes).status_code == 200


def test_request_scope_covers_the_query_string(fleet: FleetEnv, alice: MinerKey) -> None:
    headers = alice.headers(fleet.clock.unix, b"", "GET", "/servers/?a=1")
    assert fleet.client().get("/servers/?a=1", headers=headers).status_code == 200
    headers = alice.headers(fleet.clock.unix, b"", "GET", "/servers/")
    refused(fleet.client().get("/servers/?a=1", headers=headers), "does not verify")


def test_request_scope_covers_a_posted_body(fleet: FleetEnv, alice: MinerKey) -> None:
    fleet.boot()
    body = json_body(server_args("node-1"))
    headers = {
        **alice.headers(fleet.clock.unix, body, "POST", "/servers/"),
        "Content-Type": "application/json",
    }
    assert fleet.client().post("/servers/", content=body, headers=headers).status_code == 201


def test_the_stronger_form_can_be_required(make_fleet: FleetFactory) -> None:
    env = make_fleet(auth_require_request_scope=True)
    key = env.add_miner(MinerKey.from_seed(78))
    refused(env.signed("GET", "/servers/", key), "X-Attest-Signature-Scope: request")
    headers = key.headers(env.clock.unix, b"", "GET", "/servers/")
    assert env.client().get("/servers/", headers=headers).status_code == 200
    token = env.issue_token(key)
    assert env.with_token("GET", "/servers/", token).status_code == 200
