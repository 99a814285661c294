"""Key release: HPKE sealing to both KEMs the protocol names, and key validation."""

from __future__ import annotations

import secrets

import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from tdx_boot_attest.agent.protocol import Kem, hpke_suite, key_release_info
from tdx_boot_attest.server.boot.key_release import load_public_key, seal_for_agent
from tdx_boot_attest.server.errors import RequestInvalid


def test_x25519_sealed_key_opens_only_with_the_right_nonce() -> None:
    private = x25519.X25519PrivateKey.generate()
    nonce = secrets.token_bytes(32)
    public = load_public_key(Kem.X25519, private.public_key().public_bytes_raw())
    sealed = seal_for_agent(b"luks-pw-x", public, Kem.X25519, nonce)
    suite = hpke_suite(Kem.X25519)
    assert suite.decrypt(sealed, private, key_release_info(nonce)) == b"luks-pw-x"
    with pytest.raises(Exception):  # noqa: B017 - any HPKE failure will do
        suite.decrypt(sealed, private, key_release_info(bytes(32)))


def test_hybrid_mlkem768_x25519_sealed_key() -> None:
    pq = mlkem.MLKEM768PrivateKey.generate()
    classic = x25519.X25519PrivateKey.generate()
    raw = pq.public_key().public_bytes_raw() + classic.public_key().public_bytes_raw()
    assert len(raw) == 1216
    nonce = secrets.token_bytes(32)
    sealed = seal_for_agent(
        b"luks-pw-pq", load_public_key(Kem.MLKEM768_X25519, raw), Kem.MLKEM768_X25519, nonce
    )
    private = hpke.MLKEM768X25519PrivateKey(pq, classic)
    opened = hpke_suite(Kem.MLKEM768_X25519).decrypt(sealed, private, key_release_info(nonce))
    assert opened == b"luks-pw-pq"


@pytest.mark.parametrize(
    ("kem", "raw"),
    [
        (Kem.X25519, bytes(31)),
        (Kem.MLKEM768_X25519, bytes(32)),
        (Kem.MLKEM768_X25519, b"\xff" * 1216),
    ],
)
def test_invalid_public_keys_are_refused(kem: Kem, raw: bytes) -> None:
    with pytest.raises(RequestInvalid) as caught:
        load_public_key(kem, raw)
    assert caught.value.reason == "public_key_invalid"


@pytest.mark.parametrize("kem", [Kem.X25519, Kem.MLKEM768_X25519])
def test_low_order_x25519_point_is_refused_not_a_500(kem: Kem) -> None:
    raw = bytes(1184 if kem is Kem.MLKEM768_X25519 else 0) + bytes(32)
    with pytest.raises(RequestInvalid) as caught:
        seal_for_agent(b"luks-pw-z", load_public_key(kem, raw), kem, bytes(32))
    assert caught.value.reason == "public_key_invalid"
