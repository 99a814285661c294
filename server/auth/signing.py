"""What a miner signs, and the sr25519 check of that signature.

The message (defined once, in agent.protocol.request_signing_message) is
``"{hotkey}:{nonce}:{X}"`` where X is the SHA-256 hex digest of the raw request body when
the request has one, else the purpose string ``tee``; a request-scope signature appends
``":{METHOD}:{path}"``.
"""

from __future__ import annotations

from typing import Final

import sr25519

from tdx_boot_attest.agent.protocol import (
    SIGNATURE_PURPOSE,
    SignatureScope,
    request_signing_message,
)
from tdx_boot_attest.server.auth.errors import AuthenticationError

PURPOSE: Final = SIGNATURE_PURPOSE
SR25519_SIGNATURE_BYTES: Final = 64


def signing_message(
    hotkey: str,
    timestamp: str,
    body: bytes,
    *,
    scope: SignatureScope = SignatureScope.BODY,
    method: str = "",
    path: str = "",
) -> bytes:
    """The exact bytes signed for a request with ``body`` (empty for none). Raises nothing."""
    return request_signing_message(hotkey, timestamp, body, scope=scope, method=method, path=path)


def parse_signature(text: str) -> bytes:
    """Decode a hex sr25519 signature (an optional ``0x`` prefix is allowed).

    Raises AuthenticationError when it is not hex or not 64 bytes.
    """
    digits = text[2:] if text.startswith(("0x", "0X")) else text
    try:
        signature = bytes.fromhex(digits)
    except ValueError:
        raise AuthenticationError("X-Chutes-Signature is not hexadecimal") from None
    if len(signature) != SR25519_SIGNATURE_BYTES:
        raise AuthenticationError(
            f"X-Chutes-Signature must be {SR25519_SIGNATURE_BYTES} bytes "
            f"({2 * SR25519_SIGNATURE_BYTES} hex characters), got {len(signature)}"
        )
    return signature


def signature_is_valid(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s sr25519 signature of ``message``.

    Raises nothing: a malformed key or signature is simply not valid.
    """
    try:
        return bool(sr25519.verify(signature, message, public_key))
    except (ValueError, TypeError):
        return False
