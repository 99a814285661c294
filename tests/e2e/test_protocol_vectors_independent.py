"""docs/protocol-vectors.json reproduced from docs/protocol.md alone.

Nothing of tdx_boot_attest is imported here: REPORTDATA, the HPKE key release (RFC 9180
base mode, built from the X25519, HKDF and ChaCha20-Poly1305 primitives), the runtime
signature and the event log replay are written again from the document, so a change to
either the code or the document that breaks the published bytes shows here, and an
implementation in another language can follow the same steps.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

VECTORS_PATH = Path(__file__).resolve().parents[2] / "docs" / "protocol-vectors.json"


def load_vectors() -> dict[str, Any]:
    """The published vectors, as JSON."""
    vectors: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    return vectors


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    return load_vectors()


# -- protocol.md section 2: REPORTDATA ---------------------------------------------------


def length_prefixed(data: bytes) -> bytes:
    """F(x): len(x) as 2 bytes, big-endian, then x."""
    return struct.pack(">H", len(data)) + data


def boot_key_binding(kem: str, public_key: bytes, identity_key: bytes) -> bytes:
    material = (
        b"tdx-boot-attest v2 boot-keys"
        + length_prefixed(kem.encode("ascii"))
        + length_prefixed(public_key)
        + length_prefixed(identity_key)
    )
    return hashlib.sha256(material).digest()


def runtime_identity_binding(identity_key: bytes) -> bytes:
    return hashlib.sha256(
        b"tdx-boot-attest v2 runtime-identity" + length_prefixed(identity_key)
    ).digest()


def runtime_signature_message(server_id: str, nonce: bytes, quote: bytes) -> bytes:
    return (
        b"tdx-boot-attest v2 runtime-signature"
        + length_prefixed(server_id.encode("utf-8"))
        + nonce
        + hashlib.sha256(quote).digest()
    )


# -- protocol.md section 4: HPKE (RFC 9180) base mode, single shot ------------------------

KEM_X25519_HKDF_SHA256 = 0x0020
KDF_HKDF_SHA256 = 0x0001
AEAD_CHACHA20_POLY1305 = 0x0003


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    mac = crypto_hmac.HMAC(key, hashes.SHA256())
    mac.update(data)
    return mac.finalize()


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac_sha256(prk, block + info + bytes([counter]))
        out += block
        counter += 1
    return out[:length]


def labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return hmac_sha256(salt, b"HPKE-v1" + suite_id + label + ikm)


def labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    return hkdf_expand(
        prk, struct.pack(">H", length) + b"HPKE-v1" + suite_id + label + info, length
    )


def kem_shared_secret(dh: bytes, enc: bytes, recipient_public: bytes) -> bytes:
    kem_suite = b"KEM" + struct.pack(">H", KEM_X25519_HKDF_SHA256)
    eae_prk = labeled_extract(kem_suite, b"", b"eae_prk", dh)
    return labeled_expand(kem_suite, eae_prk, b"shared_secret", enc + recipient_public, 32)


def key_schedule(shared_secret: bytes, info: bytes) -> tuple[bytes, bytes]:
    suite = b"HPKE" + struct.pack(
        ">HHH", KEM_X25519_HKDF_SHA256, KDF_HKDF_SHA256, AEAD_CHACHA20_POLY1305
    )
    psk_id_hash = labeled_extract(suite, b"", b"psk_id_hash", b"")
    info_hash = labeled_extract(suite, b"", b"info_hash", info)
    context = b"\x00" + psk_id_hash + info_hash  # mode_base
    secret = labeled_extract(suite, shared_secret, b"secret", b"")
    key = labeled_expand(suite, secret, b"key", context, 32)
    base_nonce = labeled_expand(suite, secret, b"base_nonce", context, 12)
    return key, base_nonce


def hpke_seal(
    recipient_public: bytes, ephemeral_private: bytes, info: bytes, plaintext: bytes
) -> bytes:
    """enc || ciphertext for a chosen ephemeral key (deterministic encapsulation)."""
    ephemeral = x25519.X25519PrivateKey.from_private_bytes(ephemeral_private)
    enc = ephemeral.public_key().public_bytes_raw()
    dh = ephemeral.exchange(x25519.X25519PublicKey.from_public_bytes(recipient_public))
    key, base_nonce = key_schedule(kem_shared_secret(dh, enc, recipient_public), info)
    return enc + ChaCha20Poly1305(key).encrypt(base_nonce, plaintext, b"")


def hpke_open(recipient_private: bytes, info: bytes, sealed: bytes) -> bytes:
    """The plaintext of enc || ciphertext (single shot: sequence number 0, empty aad)."""
    recipient = x25519.X25519PrivateKey.from_private_bytes(recipient_private)
    enc, ciphertext = sealed[:32], sealed[32:]
    dh = recipient.exchange(x25519.X25519PublicKey.from_public_bytes(enc))
    recipient_public = recipient.public_key().public_bytes_raw()
    key, base_nonce = key_schedule(kem_shared_secret(dh, enc, recipient_public), info)
    return ChaCha20Poly1305(key).decrypt(base_nonce, ciphertext, b"")


# -- protocol.md section 5: the event log ------------------------------------------------

SHA384 = 0x000C


def replay_event_log(log: bytes) -> tuple[list[str], list[str], list[int]]:
    """(SHA-384 digest of each record after the header, RTMR0..3, covered RTMRs)."""
    # First record, SHA-1 layout: MR index, type, 20-byte digest, size, Spec ID event.
    _mr, event_type, _sha1, size = struct.unpack_from("<II20sI", log, 0)
    assert event_type == 3
    spec = log[32 : 32 + size]
    assert spec[:16] == b"Spec ID Event03\x00"
    (count,) = struct.unpack_from("<I", spec, 24)
    sizes = dict(struct.unpack_from("<HH", spec, 28 + 4 * i) for i in range(count))
    offset = 32 + size
    registers = [bytes(48)] * 4
    digests: list[str] = []
    covered: set[int] = set()
    while offset < len(log):
        mr_index, event_type, digest_count = struct.unpack_from("<III", log, offset)
        offset += 12
        sha384 = b""
        for _ in range(digest_count):
            (algorithm,) = struct.unpack_from("<H", log, offset)
            digest = log[offset + 2 : offset + 2 + sizes[algorithm]]
            offset += 2 + sizes[algorithm]
            if algorithm == SHA384:
                sha384 = digest
        (data_size,) = struct.unpack_from("<I", log, offset)
        offset += 4 + data_size
        digests.append(sha384.hex())
        if event_type != 3 and 1 <= mr_index <= 4:
            rtmr = mr_index - 1
            registers[rtmr] = hashlib.sha384(registers[rtmr] + sha384).digest()
            covered.add(rtmr)
    return digests, [r.hex() for r in registers], sorted(covered)


# -- the vectors ---------------------------------------------------------------------------


def test_the_file_is_versioned_and_every_vector_is_described(vectors: dict[str, Any]) -> None:
    assert isinstance(vectors["version"], int)
    assert vectors["protocol_version"] == 2
    for name, vector in vectors["vectors"].items():
        assert vector["description"].strip(), name


def test_report_data_v1(vectors: dict[str, Any]) -> None:
    vector = vectors["vectors"]["report_data_v1"]
    nonce = bytes.fromhex(vector["nonce"])
    public_key = bytes.fromhex(vector["hpke_public_key"])
    expected = nonce + hashlib.sha256(public_key).digest()
    assert expected.hex() == vector["report_data"]


def test_report_data_v2_boot(vectors: dict[str, Any]) -> None:
    vector = vectors["vectors"]["report_data_v2_boot"]
    nonce = bytes.fromhex(vector["nonce"])
    public_key = bytes.fromhex(vector["hpke_public_key"])
    identity_key = bytes.fromhex(vector["identity_public_key"])
    binding_input = (
        b"tdx-boot-attest v2 boot-keys"
        + length_prefixed(vector["kem"].encode("ascii"))
        + length_prefixed(public_key)
        + length_prefixed(identity_key)
    )
    assert binding_input.hex() == vector["boot_key_binding_input"]
    assert len(binding_input) == 104
    binding = boot_key_binding(vector["kem"], public_key, identity_key)
    assert binding.hex() == vector["boot_key_binding"]
    assert (nonce + binding).hex() == vector["report_data"]


def test_report_data_v2_runtime_and_signature(vectors: dict[str, Any]) -> None:
    vector = vectors["vectors"]["report_data_v2_runtime"]
    nonce = bytes.fromhex(vector["nonce"])
    identity = ed25519.Ed25519PrivateKey.from_private_bytes(
        bytes.fromhex(vector["identity_private_key"])
    )
    identity_key = identity.public_key().public_bytes_raw()
    assert identity_key.hex() == vector["identity_public_key"]
    assert (nonce + runtime_identity_binding(identity_key)).hex() == vector["report_data"]
    quote = base64.b64decode(vector["quote_base64"], validate=True)
    message = runtime_signature_message(vector["server_id"], nonce, quote)
    assert message.hex() == vector["signature_message"]
    # Ed25519 signatures are deterministic (RFC 8032), so the signature is a vector too.
    assert identity.sign(message).hex() == vector["identity_signature"]


def test_hpke_suite_and_info(vectors: dict[str, Any]) -> None:
    vector = vectors["vectors"]["key_release"]
    suite = vector["suite"]
    assert (suite["kem_id"], suite["kdf_id"], suite["aead_id"]) == (
        KEM_X25519_HKDF_SHA256,
        KDF_HKDF_SHA256,
        AEAD_CHACHA20_POLY1305,
    )
    nonce = bytes.fromhex(vector["nonce"])
    assert (b"tdx-boot-attest v1 key-release" + nonce).hex() == vector["info"]


def test_sealed_key_opens_to_the_passphrase(vectors: dict[str, Any]) -> None:
    vector = vectors["vectors"]["key_release"]
    recipient_private = bytes.fromhex(vector["recipient_private_key"])
    recipient_public = (
        x25519.X25519PrivateKey.from_private_bytes(recipient_private)
        .public_key()
        .public_bytes_raw()
    )
    assert recipient_public.hex() == vector["recipient_public_key"]
    info = bytes.fromhex(vector["info"])
    sealed = base64.b64decode(vector["sealed_key"], validate=True)
    passphrase = bytes.fromhex(vector["passphrase"])
    assert hpke_open(recipient_private, info, sealed) == passphrase
    # With the published ephemeral key, sealing is deterministic and gives the same bytes.
    ephemeral = bytes.fromhex(vector["ephemeral_private_key"])
    assert hpke_seal(recipient_public, ephemeral, info, passphrase) == sealed


def test_boot_attestation_request(vectors: dict[str, Any]) -> None:
    vector = vectors["vectors"]["boot_attestation_request"]
    report = vectors["vectors"]["report_data_v2_boot"]
    assert vector["method"] == "POST"
    assert vector["path"] == "/servers/boot/attestation"
    assert vector["headers"] == {"X-Chutes-Nonce": report["nonce"]}
    body = json.loads(vector["body"])
    assert list(body) == ["quote", "public_key", "kem", "identity_key", "event_log"]
    assert base64.b64decode(body["public_key"], validate=True).hex() == report["hpke_public_key"]
    identity = base64.b64decode(body["identity_key"], validate=True)
    assert identity.hex() == report["identity_public_key"]
    assert body["kem"] == report["kem"]
    assert body["event_log"] == vectors["vectors"]["event_log"]["log_base64"]
    quote = base64.b64decode(body["quote"], validate=True)
    assert quote.hex() == vector["quote"]


def test_runtime_attestation_request(vectors: dict[str, Any]) -> None:
    vector = vectors["vectors"]["runtime_attestation_request"]
    runtime = vectors["vectors"]["report_data_v2_runtime"]
    assert vector["method"] == "POST"
    assert vector["path"] == f"/servers/{runtime['server_id']}/attestation"
    body = json.loads(vector["body"])
    assert list(body) == ["quote", "identity_signature"]
    assert body["quote"] == runtime["quote_base64"]
    signature = base64.b64decode(body["identity_signature"], validate=True)
    assert signature.hex() == runtime["identity_signature"]


def test_event_log_replay(vectors: dict[str, Any]) -> None:
    vector = vectors["vectors"]["event_log"]
    log = base64.b64decode(vector["log_base64"], validate=True)
    digests, rtmrs, covered = replay_event_log(log)
    assert digests == [event["sha384"] for event in vector["events"]]
    assert rtmrs == vector["rtmrs"]
    assert covered == vector["covered_rtmrs"]
