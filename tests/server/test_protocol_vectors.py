"""The verifier's side of the protocol against the published docs/protocol-vectors.json."""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import x25519

from tdx_boot_attest.agent.protocol import Kem
from tdx_boot_attest.server.boot.attestation import _step10_check_report_data
from tdx_boot_attest.server.boot.key_release import load_public_key, seal_for_agent
from tdx_boot_attest.server.errors import AttestationRefused
from tdx_boot_attest.server.event_evidence import decode_event_log_field, parse_event_log_field
from tdx_boot_attest.server.identity_binding import (
    RuntimeBinding,
    check_runtime_binding,
    decode_identity_key,
)
from tdx_boot_attest.server.quote import TdQuote
from tdx_boot_attest.server.schemas import BootAttestationRequest
from tests.support.protocol_vectors import hex_bytes, vector

ZERO48 = "00" * 48


def quote_with(report_data: bytes, raw: bytes = b"") -> TdQuote:
    """A parsed quote that carries ``report_data`` (the checks below read nothing else)."""
    return TdQuote(
        raw=raw,
        version=4,
        fmspc="00" * 6,
        ca="processor",
        mrtd=ZERO48,
        rtmrs=(ZERO48, ZERO48, ZERO48, ZERO48),
        mrconfigid=ZERO48,
        mrowner=ZERO48,
        td_attributes=bytes(8),
        report_data=report_data,
        mrseam=ZERO48,
        xfam=bytes(8),
        tee_tcb_svn=bytes(16),
    )


def flip_last_bit(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def test_boot_request_body_is_read_as_published() -> None:
    v = vector("boot_attestation_request")
    boot = vector("report_data_v2_boot")
    request = BootAttestationRequest.model_validate(json.loads(v["body"]))
    assert base64.b64decode(request.quote).hex() == v["quote"]
    assert base64.b64decode(request.public_key).hex() == boot["hpke_public_key"]
    assert request.kem == boot["kem"]
    identity_key = decode_identity_key(request.identity_key)
    assert identity_key is not None and identity_key.hex() == boot["identity_public_key"]
    assert request.event_log == vector("event_log")["log_base64"]


def test_boot_report_data_v2_is_accepted_and_a_changed_one_refused() -> None:
    v = vector("report_data_v2_boot")
    nonce, public_key = hex_bytes(v["nonce"]), hex_bytes(v["hpke_public_key"])
    identity_key = hex_bytes(v["identity_public_key"])
    report_data = hex_bytes(v["report_data"])
    _step10_check_report_data(quote_with(report_data), nonce, Kem.X25519, public_key, identity_key)
    with pytest.raises(AttestationRefused) as refused:
        _step10_check_report_data(
            quote_with(flip_last_bit(report_data)), nonce, Kem.X25519, public_key, identity_key
        )
    assert refused.value.reason == "report_data_mismatch"


def test_boot_report_data_v1_is_accepted() -> None:
    v = vector("report_data_v1")
    quote = quote_with(hex_bytes(v["report_data"]))
    nonce, public_key = hex_bytes(v["nonce"]), hex_bytes(v["hpke_public_key"])
    _step10_check_report_data(quote, nonce, Kem.X25519, public_key, None)


def test_runtime_binding_and_signature_are_accepted() -> None:
    v = vector("report_data_v2_runtime")
    quote = quote_with(hex_bytes(v["report_data"]), base64.b64decode(v["quote_base64"]))
    binding = RuntimeBinding(
        server_id=v["server_id"],
        identity_key=hex_bytes(v["identity_public_key"]),
        signature=hex_bytes(v["identity_signature"]),
    )
    check_runtime_binding(binding, quote)
    with pytest.raises(AttestationRefused) as refused:
        check_runtime_binding(dataclasses.replace(binding, server_id="node-2"), quote)
    assert refused.value.reason == "identity_signature_invalid"


def test_sealed_key_opens_with_the_published_suite_and_info() -> None:
    v = vector("key_release")
    private_key = x25519.X25519PrivateKey.from_private_bytes(hex_bytes(v["recipient_private_key"]))
    public_key = load_public_key(Kem(v["suite"]["kem"]), hex_bytes(v["recipient_public_key"]))
    passphrase = hex_bytes(v["passphrase"])
    sealed = seal_for_agent(passphrase, public_key, Kem.X25519, hex_bytes(v["nonce"]))
    # Opened with the suite the file names, built here from cryptography's own ids, and
    # the published info bytes: not with the server's helpers.
    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
    assert suite.decrypt(sealed, private_key, hex_bytes(v["info"])) == passphrase
    assert len(sealed) == 32 + len(passphrase) + 16


def test_event_log_field_replays_to_the_published_registers() -> None:
    v = vector("event_log")
    evidence = parse_event_log_field(decode_event_log_field(v["log_base64"]))
    assert [register.hex() for register in evidence.log.replay()] == v["rtmrs"]
    assert evidence.covered == [f"rtmr{n}" for n in v["covered_rtmrs"]]
