"""agent.protocol and agent.eventlog against the published docs/protocol-vectors.json."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from tdx_boot_attest.agent import eventlog, protocol
from tests.support.protocol_vectors import hex_bytes, vector


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
