"""Key release: the image passphrase sealed to the agent's one-time HPKE public key."""

from __future__ import annotations

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from tdx_boot_attest.agent.protocol import (
    PUBLIC_KEY_BYTES,
    Kem,
    Reason,
    hpke_suite,
    key_release_info,
)
from tdx_boot_attest.server.errors import RequestInvalid

MLKEM768_PUBLIC_KEY_BYTES = 1184

HpkePublicKey = x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey


def load_public_key(kem: Kem, raw: bytes) -> HpkePublicKey:
    """Decode the agent's raw public key (X25519: 32 bytes; hybrid: ML-KEM-768 || X25519).

    Raises RequestInvalid(public_key_invalid) for a wrong length or an invalid key.
    """
    expected = PUBLIC_KEY_BYTES[kem]
    if len(raw) != expected:
        raise RequestInvalid(
            f"public_key is {len(raw)} bytes; kem {kem.value} needs {expected}",
            Reason.PUBLIC_KEY_INVALID,
        )
    try:
        if kem is Kem.X25519:
            return x25519.X25519PublicKey.from_public_bytes(raw)
        return hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(raw[:MLKEM768_PUBLIC_KEY_BYTES]),
            x25519.X25519PublicKey.from_public_bytes(raw[MLKEM768_PUBLIC_KEY_BYTES:]),
        )
    except ValueError:
        raise RequestInvalid(
            f"public_key is not a valid {kem.value} key", Reason.PUBLIC_KEY_INVALID
        ) from None


def seal_for_agent(passphrase: bytes, public_key: HpkePublicKey, kem: Kem, nonce: bytes) -> bytes:
    """HPKE base-mode single-shot encryption, ``enc || ciphertext``, info bound to ``nonce``.

    Raises RequestInvalid(public_key_invalid) for a key no shared secret can be made with
    (an X25519 low-order point; checked here rather than by an extra exchange up front).
    """
    try:
        return hpke_suite(kem).encrypt(passphrase, public_key, key_release_info(nonce))
    except ValueError:
        raise RequestInvalid(
            f"public_key is not a usable {kem.value} key (low-order point)",
            Reason.PUBLIC_KEY_INVALID,
        ) from None
