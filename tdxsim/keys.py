"""Deterministic key material for the simulated hardware root, derived from a seed.

Every key and serial number comes from HKDF-SHA256 over the seed with a label naming its
role, so the same seed always yields the same PKI. No I/O.
"""

from __future__ import annotations

from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_SALT: Final = b"tdxsim simulated hardware root v1"
# Order of the P-256 group (SEC 2, secp256r1 n).
P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def derive_bytes(seed: int, label: str, length: int) -> bytes:
    """``length`` pseudo-random bytes for ``label`` under ``seed``. Raises nothing."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=_SALT, info=label.encode())
    return hkdf.derive(str(seed).encode("ascii"))


def derive_p256_key(seed: int, label: str) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key for ``label``: hash-to-scalar with 128 extra bits against bias.

    Raises nothing.
    """
    wide = int.from_bytes(derive_bytes(seed, "p256 key: " + label, 48), "big")
    scalar = wide % (P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def derive_serial(seed: int, label: str) -> int:
    """A positive 159-bit certificate serial number for ``label``. Raises nothing."""
    raw = int.from_bytes(derive_bytes(seed, "serial: " + label, 20), "big")
    return (raw >> 1) | (1 << 150)


def sign_raw(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """ECDSA P-256/SHA-256 signature as raw r||s (64 bytes), deterministic (RFC 6979).

    Raises nothing.
    """
    der_sig = key.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    r, s = decode_dss_signature(der_sig)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def raw_public_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The 64-byte X||Y form of a P-256 public key, as quotes carry it. Raises nothing."""
    numbers = key.public_key().public_numbers()
    return numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")
