"""Per-miner API tokens: 32 random bytes shown once, stored only as a SHA-256 digest."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

TOKEN_PREFIX: Final = "tdxa_"  # noqa: S105 (a public marker, not a secret)
TOKEN_RANDOM_BYTES: Final = 32


def new_token() -> str:
    """A fresh API token (prefix + URL-safe base64 of 32 random bytes). Raises nothing."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_RANDOM_BYTES)


def token_digest(token: str) -> str:
    """The SHA-256 hex digest under which a token is stored. Raises nothing."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def digests_match(stored: str, presented: str) -> bool:
    """Constant-time comparison of two token digests. Raises nothing."""
    return hmac.compare_digest(stored.encode("ascii"), presented.encode("ascii"))
