"""Stateless boot nonces: issued without a database write, single use when spent.

No I/O. A boot nonce is still 32 bytes (64 hex characters) and still REPORTDATA[0:32];
inside, it carries its expiry and a tag under a key only the server's replicas hold::

    byte  0       format (0x01)
    bytes 1..5    expires_at, Unix seconds, big-endian (40 bits)
    bytes 6..15   random (80 bits from the CSPRNG)
    bytes 16..31  HMAC-SHA256(nonce key, bytes 0..15), first 16 bytes

The nonce key is HKDF-SHA256 of the master key with a random salt every replica reads
from the database (``server_secrets``): replicas sharing the database and the master
key accept each other's nonces, and nobody without both can make one. A nonce whose tag
does not verify is unknown; past its expiry it is expired; it is used once the
attempt that spent it committed (``spent_nonces``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tdx_boot_attest.agent.protocol import NONCE_BYTES

FORMAT = 0x01
EXPIRY_BYTES = 5
RANDOM_BYTES = 10
TAG_BYTES = 16
SIGNED_BYTES = 1 + EXPIRY_BYTES + RANDOM_BYTES
KEY_PURPOSE = b"boot nonce"
SALT_NAME = "boot_nonce_key_salt"
SALT_BYTES = 32

if SIGNED_BYTES + TAG_BYTES != NONCE_BYTES:  # pragma: no cover - a layout mistake
    raise AssertionError("the nonce layout must fill exactly NONCE_BYTES")


@dataclass(frozen=True, slots=True)
class IssuedBootNonce:
    """A fresh nonce and the moment it stops being accepted."""

    value: bytes
    expires_at: datetime

    @property
    def hex(self) -> str:
        """The nonce as it travels: 64 lowercase hex characters."""
        return self.value.hex()


class BootNonces:
    """Issues and authenticates stateless boot nonces under one key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "BootNonces(<key redacted>)"

    def issue(self, now: datetime, ttl_seconds: int) -> IssuedBootNonce:
        """A nonce valid until ``now + ttl_seconds`` (whole seconds). Raises nothing."""
        expires = int((now + timedelta(seconds=ttl_seconds)).timestamp())
        body = (
            bytes([FORMAT])
            + expires.to_bytes(EXPIRY_BYTES, "big")
            + secrets.token_bytes(RANDOM_BYTES)
        )
        return IssuedBootNonce(body + self._tag(body), datetime.fromtimestamp(expires, UTC))

    def expiry_of(self, nonce: bytes) -> datetime | None:
        """When ``nonce`` expires, if this server issued it; None otherwise. Raises nothing."""
        if len(nonce) != NONCE_BYTES or nonce[0] != FORMAT:
            return None
        body, tag = nonce[:SIGNED_BYTES], nonce[SIGNED_BYTES:]
        if not hmac.compare_digest(tag, self._tag(body)):
            return None
        seconds = int.from_bytes(body[1 : 1 + EXPIRY_BYTES], "big")
        return datetime.fromtimestamp(seconds, UTC)

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:TAG_BYTES]
