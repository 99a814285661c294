"""agent.protocol and agent.eventlog against the published docs/protocol-vectors.json."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from tdx_boot_attest.agent import eventlog, http_client, protocol
from tdx_boot_attest.agent.auth import BearerSigner
from tdx_boot_attest.agent.identity import Identity
from tdx_boot_attest.agent.runtime import attest_runtime, runtime_paths
from tests.support.protocol_vectors import hex_bytes, vector
from tests.support.scripted_http import Answer, ScriptedServer


def test_report_data_v1() -> None:
    v = vector("report_data_v1")
    got = protocol.report_data(hex_bytes(v["nonce"]), hex_bytes(v["hpke_public_key"]))
    assert got.hex() == v["report_data"]


def test_report_data_v2_boot() -> None:
    v = vector("report_data_v2_boot")
    kem = protocol.parse_kem(v["kem"])
    public_key, identity_key = hex_bytes(v["hpke_public_key"]), hex_bytes(v["identity_public_key"])
    assert protocol.boot_key_binding(kem, public_key, identity_key).hex() == v["boot_key_binding"]
    got = protocol.boot_report_data(hex_bytes(v["nonce"]), kem, public_key, identity_key)
    assert got.hex() == v["report_data"]


def test_the_published_keys_are_the_pairs_of_the_private_keys() -> None:
    v = vector("report_data_v2_boot")
    hpke_key = x25519.X25519PrivateKey.from_private_bytes(hex_bytes(v["hpke_private_key"]))
    assert hpke_key.public_key().public_bytes_raw().hex() == v["hpke_public_key"]
    identity = ed25519.Ed25519PrivateKey.from_private_bytes(hex_bytes(v["identity_private_key"]))
    assert identity.public_key().public_bytes_raw().hex() == v["identity_public_key"]


def test_runtime_report_data_and_signature_message() -> None:
    v = vector("report_data_v2_runtime")
    nonce, identity_key = hex_bytes(v["nonce"]), hex_bytes(v["identity_public_key"])
    assert protocol.runtime_report_data(nonce, identity_key).hex() == v["report_data"]
    quote = base64.b64decode(v["quote_base64"])
    message = protocol.runtime_signature_message(v["server_id"], nonce, quote)
    assert message.hex() == v["signature_message"]
    signature = hex_bytes(v["identity_signature"])
    assert protocol.identity_signature_is_valid(identity_key, signature, message)


def test_key_release_info_and_suite() -> None:
    v = vector("key_release")
    assert protocol.key_release_info(hex_bytes(v["nonce"])).hex() == v["info"]
    suite = v["suite"]
    assert protocol.parse_kem(suite["kem"]) is protocol.Kem.X25519
    # The suite's ids as RFC 9180 numbers them: what hpke_suite builds must be that suite,
    # so it opens the published sealed key (below) and nothing sealed under another.
    assert (suite["kem_id"], suite["kdf_id"], suite["aead_id"]) == (0x0020, 0x0001, 0x0003)


def test_sealed_key_opens_to_the_passphrase() -> None:
    v = vector("key_release")
    private_key = x25519.X25519PrivateKey.from_private_bytes(hex_bytes(v["recipient_private_key"]))
    sealed = protocol.b64decode(v["sealed_key"], "sealed_key")
    suite = protocol.hpke_suite(protocol.parse_kem(v["suite"]["kem"]))
    opened = suite.decrypt(sealed, private_key, protocol.key_release_info(hex_bytes(v["nonce"])))
    assert opened.hex() == v["passphrase"]


def test_event_log_digests_and_replay() -> None:
    v = vector("event_log")
    log = eventlog.parse_event_log(protocol.b64decode(v["log_base64"], "event_log"))
    got = [
        {"mr_index": e.mr_index, "event_type": e.event_type, "sha384": (e.sha384 or b"").hex()}
        for e in log.events
    ]
    assert got == v["events"]
    assert [register.hex() for register in log.replay()] == v["rtmrs"]
    assert sorted(log.covered()) == v["covered_rtmrs"]


class PlaceholderQuotes:
    """Quotes the vector's placeholder bytes, recording the REPORTDATA asked for."""

    def __init__(self, quote: bytes) -> None:
        self.quote = quote
        self.calls: list[bytes] = []

    def get_quote(self, report_data: bytes) -> bytes:
        self.calls.append(report_data)
        return self.quote


def test_boot_client_sends_the_published_request_and_opens_the_published_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    boot, request, release = (
        vector("report_data_v2_boot"),
        vector("boot_attestation_request"),
        vector("key_release"),
    )
    hpke_key = x25519.X25519PrivateKey.from_private_bytes(hex_bytes(boot["hpke_private_key"]))
    monkeypatch.setattr(
        http_client,
        "new_key_pair",
        lambda kem: (hpke_key, hpke_key.public_key().public_bytes_raw()),
    )
    identity = Identity(
        ed25519.Ed25519PrivateKey.from_private_bytes(hex_bytes(boot["identity_private_key"])),
        tmp_path / "identity.key",
    )
    server = ScriptedServer()
    server.script(
        "GET",
        protocol.NONCE_PATH,
        Answer(200, {"nonce": boot["nonce"], "expires_at": "2030-01-01T00:00:00Z"}),
    )
    server.script(
        request["method"],
        request["path"],
        Answer(
            200,
            {
                "attestation_id": "att-1",
                "image": "golden",
                "verified_at": "2030-01-01T00:00:00Z",
                "sealed_key": release["sealed_key"],
            },
        ),
    )
    quotes = PlaceholderQuotes(hex_bytes(request["quote"]))
    log = protocol.b64decode(vector("event_log")["log_base64"], "event_log")
    with server.running():
        client = http_client.BootClient(
            server.url, http_client.make_session(None), quotes, identity=identity, event_log=log
        )
        key = client.fetch_key(30)
    assert [call.hex() for call in quotes.calls] == [boot["report_data"]]
    post = server.requests[-1]
    assert (post.method, post.path) == (request["method"], request["path"])
    assert {k: post.headers[k] for k in request["headers"]} == request["headers"]
    assert post.body.decode() == request["body"]
    assert bytes(key.key).hex() == release["passphrase"]


def test_runtime_attestation_sends_the_published_request() -> None:
    runtime, request = vector("report_data_v2_runtime"), vector("runtime_attestation_request")
    identity = Identity(
        ed25519.Ed25519PrivateKey.from_private_bytes(hex_bytes(runtime["identity_private_key"])),
        Path("/run/tdx-boot-attest/identity.key"),
    )
    nonce_path, attestation_path = runtime_paths(runtime["server_id"])
    assert attestation_path == request["path"]
    server = ScriptedServer()
    server.script(
        "GET",
        nonce_path,
        Answer(200, {"nonce": runtime["nonce"], "expires_at": "2030-01-01T00:00:00Z"}),
    )
    server.script(request["method"], request["path"], Answer(200, {"status": "ok"}))
    quotes = PlaceholderQuotes(base64.b64decode(runtime["quote_base64"]))
    with server.running():
        client = http_client.BootClient(server.url, http_client.make_session(None), quotes)
        attest_runtime(client, BearerSigner("token"), identity, runtime["server_id"], 30)
    assert [call.hex() for call in quotes.calls] == [runtime["report_data"]]
    post = server.requests[-1]
    assert (post.method, post.path) == (request["method"], request["path"])
    assert post.body.decode() == request["body"]
