"""The authentication headers of one request, parsed into exactly one credential kind."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from tdx_boot_attest.agent.protocol import (
    HOTKEY_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    SIGNATURE_SCOPE_HEADER,
    SignatureScope,
)
from tdx_boot_attest.server.auth.errors import AuthenticationError

AUTHORIZATION_HEADER: Final = "Authorization"
_BEARER_SCHEME: Final = "bearer"
# Unix seconds fit in 10 digits until the year 2286; longer values are not timestamps.
_MAX_TIMESTAMP_DIGITS: Final = 12


@dataclass(frozen=True, slots=True)
class HotkeyCredentials:
    """An sr25519-signed request: hotkey address, unix-seconds timestamp, hex signature,
    and what the signature covers."""

    hotkey: str
    timestamp: str
    timestamp_seconds: int
    signature: str
    scope: SignatureScope = SignatureScope.BODY


@dataclass(frozen=True, slots=True)
class BearerCredentials:
    """A request carrying ``Authorization: Bearer <token>``."""

    token: str = ""

    def __repr__(self) -> str:  # the token is a secret: never print it
        return "BearerCredentials(token=<redacted>)"


def _present(value: str | None) -> bool:
    return value is not None and value.strip() != ""


def parse_credentials(
    hotkey: str | None,
    timestamp: str | None,
    signature: str | None,
    authorization: str | None,
    scope: str | None = None,
) -> HotkeyCredentials | BearerCredentials:
    """Pick the credential kind the headers carry and check its shape.

    ``scope`` is the SIGNATURE_SCOPE_HEADER value (absent: the Chutes ``body`` scope).
    Raises AuthenticationError naming the missing or malformed part: no credentials,
    a partial hotkey triple, both kinds at once, a non-numeric timestamp, an unknown
    signature scope, or an Authorization header that is not ``Bearer <token>``.
    """
    signed_parts = {
        HOTKEY_HEADER: _present(hotkey),
        NONCE_HEADER: _present(timestamp),
        SIGNATURE_HEADER: _present(signature),
    }
    uses_hotkey = signed_parts[HOTKEY_HEADER] or signed_parts[SIGNATURE_HEADER]
    if _present(authorization):
        if uses_hotkey:
            raise AuthenticationError(
                f"send either {AUTHORIZATION_HEADER} or {HOTKEY_HEADER}/{SIGNATURE_HEADER}, "
                "not both"
            )
        return _parse_bearer(authorization or "")
    if not uses_hotkey:
        raise AuthenticationError(
            f"credentials missing: sign the request ({HOTKEY_HEADER}, {NONCE_HEADER}, "
            f"{SIGNATURE_HEADER}) or send {AUTHORIZATION_HEADER}: Bearer <token>"
        )
    missing = [name for name, present in signed_parts.items() if not present]
    if missing:
        raise AuthenticationError(f"partial credentials: missing {', '.join(missing)}")
    text = (timestamp or "").strip()
    if not text.isascii() or not text.isdigit() or len(text) > _MAX_TIMESTAMP_DIGITS:
        raise AuthenticationError(f"{NONCE_HEADER} must be a unix timestamp in whole seconds")
    return HotkeyCredentials(
        hotkey=(hotkey or "").strip(),
        timestamp=text,
        timestamp_seconds=int(text),
        signature=(signature or "").strip(),
        scope=_parse_scope(scope),
    )


def _parse_scope(header: str | None) -> SignatureScope:
    text = (header or "").strip().lower()
    if not text:
        return SignatureScope.BODY
    try:
        return SignatureScope(text)
    except ValueError:
        choices = " or ".join(s.value for s in SignatureScope)
        raise AuthenticationError(f"{SIGNATURE_SCOPE_HEADER} must be {choices}") from None


def _parse_bearer(header: str) -> BearerCredentials:
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != _BEARER_SCHEME:
        raise AuthenticationError(f"{AUTHORIZATION_HEADER} must use the Bearer scheme")
    token = token.strip()
    if not token:
        raise AuthenticationError(f"{AUTHORIZATION_HEADER}: Bearer is missing its token")
    return BearerCredentials(token=token)
