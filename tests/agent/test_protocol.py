"""agent.protocol's byte-level definitions, written out here a second time by hand.

Each construction of protocol v2 (and the signed request forms) is rebuilt from its
documented layout in docs/protocol.md, so a change to the code that is not a change to
the documented bytes fails here.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from tdx_boot_attest.agent import protocol
from tdx_boot_attest.agent.protocol import Kem, ProtocolError, Reason, SignatureScope

NONCE = bytes(range(32))
HPKE_KEY = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
IDENTITY_KEY = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
QUOTE = b"\x04\x00\x02\x00\x81\x00\x00\x00" + b"q" * 100


def test_v1_report_data_is_nonce_and_sha256_of_the_key() -> None:
    assert protocol.report_data(NONCE, HPKE_KEY) == NONCE + hashlib.sha256(HPKE_KEY).digest()


def test_v2_boot_binding_layout() -> None:
    by_hand = hashlib.sha256(
        b"tdx-boot-attest v2 boot-keys"
        + b"\x00\x06x25519"
        + b"\x00\x20"
        + HPKE_KEY
        + b"\x00\x20"
        + IDENTITY_KEY
    ).digest()
    assert protocol.boot_key_binding(Kem.X25519, HPKE_KEY, IDENTITY_KEY) == by_hand
    report_data = protocol.boot_report_data(NONCE, Kem.X25519, HPKE_KEY, IDENTITY_KEY)
    assert report_data == NONCE + by_hand


def test_v2_boot_binding_with_the_hybrid_kem() -> None:
    hybrid_key = bytes(range(256)) * 4 + bytes(192)
    assert len(hybrid_key) == protocol.PUBLIC_KEY_BYTES[Kem.MLKEM768_X25519]
    by_hand = hashlib.sha256(
        b"tdx-boot-attest v2 boot-keys"
        + b"\x00\x0fmlkem768-x25519"
        + b"\x04\xc0"
        + hybrid_key
        + b"\x00\x20"
        + IDENTITY_KEY
    ).digest()
    assert protocol.boot_key_binding(Kem.MLKEM768_X25519, hybrid_key, IDENTITY_KEY) == by_hand


def test_runtime_binding_and_signed_message_layout() -> None:
    binding = hashlib.sha256(b"tdx-boot-attest v2 runtime-identity\x00\x20" + IDENTITY_KEY).digest()
    assert protocol.runtime_identity_binding(IDENTITY_KEY) == binding
    assert protocol.runtime_report_data(NONCE, IDENTITY_KEY) == NONCE + binding
    message = (
        b"tdx-boot-attest v2 runtime-signature"
        + b"\x00\x06node-1"
        + NONCE
        + hashlib.sha256(QUOTE).digest()
    )
    assert protocol.runtime_signature_message("node-1", NONCE, QUOTE) == message


def test_each_use_has_its_own_digest() -> None:
    boot = protocol.boot_key_binding(Kem.X25519, HPKE_KEY, IDENTITY_KEY)
    runtime = protocol.runtime_identity_binding(IDENTITY_KEY)
    v1 = protocol.public_key_digest(HPKE_KEY)
    assert len({boot, runtime, v1}) == 3
    # Swapping the two keys gives another binding: each has its place.
    assert protocol.boot_key_binding(Kem.X25519, IDENTITY_KEY, HPKE_KEY) != boot


def test_check_boot_report_data_picks_the_revision() -> None:
    v1 = protocol.report_data(NONCE, HPKE_KEY)
    v2 = protocol.boot_report_data(NONCE, Kem.X25519, HPKE_KEY, IDENTITY_KEY)
    assert protocol.check_boot_report_data(v1, NONCE, Kem.X25519, HPKE_KEY, None) == (True, True)
    assert protocol.check_boot_report_data(v2, NONCE, Kem.X25519, HPKE_KEY, IDENTITY_KEY) == (
        True,
        True,
    )
    # A v1 quote sent with an identity key, or a v2 quote without one, does not match.
    assert not protocol.check_boot_report_data(
        v1, NONCE, Kem.X25519, HPKE_KEY, IDENTITY_KEY
    ).public_key_matches
    assert not protocol.check_boot_report_data(
        v2, NONCE, Kem.X25519, HPKE_KEY, None
    ).public_key_matches
    other = protocol.boot_report_data(NONCE, Kem.X25519, HPKE_KEY, bytes(32))
    assert not protocol.check_boot_report_data(
        other, NONCE, Kem.X25519, HPKE_KEY, IDENTITY_KEY
    ).public_key_matches


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_identity_keys_are_32_bytes(size: int) -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.boot_key_binding(Kem.X25519, HPKE_KEY, bytes(size))
    assert caught.value.reason is Reason.IDENTITY_KEY_INVALID
    with pytest.raises(ProtocolError):
        protocol.runtime_identity_binding(bytes(size))


def test_identity_signatures_verify_only_for_their_key_and_message() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes_raw()
    message = protocol.runtime_signature_message("node-1", NONCE, QUOTE)
    signature = private.sign(message)
    assert protocol.identity_signature_is_valid(public, signature, message)
    other = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    assert not protocol.identity_signature_is_valid(other, signature, message)
    another_server = protocol.runtime_signature_message("node-2", NONCE, QUOTE)
    assert not protocol.identity_signature_is_valid(public, signature, another_server)
    assert not protocol.identity_signature_is_valid(public, signature[:63], message)
    assert not protocol.identity_signature_is_valid(public[:31], signature, message)


def test_request_signing_forms() -> None:
    digest = hashlib.sha256(b"{}").hexdigest()
    assert protocol.request_signing_message("5Abc", "17", b"{}") == f"5Abc:17:{digest}".encode()
    assert protocol.request_signing_message("5Abc", "17", b"") == b"5Abc:17:tee"
    scoped = protocol.request_signing_message(
        "5Abc", "17", b"", scope=SignatureScope.REQUEST, method="delete", path="/servers/n"
    )
    assert scoped == b"5Abc:17:tee:DELETE:/servers/n"
    as_get = protocol.request_signing_message(
        "5Abc", "17", b"", scope=SignatureScope.REQUEST, method="GET", path="/servers/n"
    )
    assert as_get != scoped


@pytest.mark.parametrize("data", [b"", b"A", b"AB", b"ABC", bytes(range(256))])
def test_base64_round_trip(data: bytes) -> None:
    assert protocol.b64decode(protocol.b64encode(data), "field") == data


@pytest.mark.parametrize(
    "text",
    [
        "QUJD=",  # padding after a complete group
        "QUJD====",
        "QQ===",  # one pad too many
        "QQ",  # padding missing
        "QR==",  # non-zero bits after the last byte
        "QU JD",  # whitespace
        "QUJD\n",
        "-_-_",  # URL-safe alphabet
        "QUJ\u00e9",  # not ASCII
    ],
)
def test_base64_that_is_not_the_canonical_text_is_refused(text: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.b64decode(text, "quote", Reason.QUOTE_MALFORMED)
    assert caught.value.reason is Reason.QUOTE_MALFORMED
    assert "quote" in str(caught.value)
