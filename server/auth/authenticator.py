"""Authentication policy: which credentials let a request in, as which miner.

A signed request gets in when, in this order: its signature scope is one the policy
accepts (``body``, the Chutes form, unless request-scope signatures are required), its
timestamp is inside the window, its hotkey is an SS58 sr25519 address, the signature
verifies over the request, the hotkey is a registered miner, and the signature has not
been used before. A bearer request gets in when the SHA-256 digest of its token belongs
to a registered miner.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from tdx_boot_attest.agent.protocol import NONCE_HEADER, SIGNATURE_SCOPE_HEADER, SignatureScope
from tdx_boot_attest.server.auth.credentials import BearerCredentials, HotkeyCredentials
from tdx_boot_attest.server.auth.errors import AuthenticationError
from tdx_boot_attest.server.auth.hotkey import hotkey_public_key
from tdx_boot_attest.server.auth.signing import parse_signature, signature_is_valid, signing_message
from tdx_boot_attest.server.auth.tokens import digests_match, token_digest

DEFAULT_TIMESTAMP_WINDOW = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class RequestTarget:
    """The method and path (with ``?query`` when there is one) of the request, as received."""

    method: str
    path: str


@dataclass(frozen=True, slots=True)
class AuthenticatedMiner:
    """The miner a request was authenticated as, and how."""

    hotkey: str
    method: str  # "signature" or "token"


class MinerLookup(Protocol):
    """Where registered miners and their token digests are kept."""

    def is_registered(self, hotkey: str) -> bool:
        """True when ``hotkey`` is a registered miner."""
        ...

    def hotkey_for_token_digest(self, digest: str) -> tuple[str, str] | None:
        """``(hotkey, stored digest)`` for the token with ``digest``, or None."""
        ...


class ReplayGuard(Protocol):
    """A store shared by every replica that accepts each signature once."""

    def claim(self, signature_digest: str, hotkey: str, expires_at: datetime) -> bool:
        """Record the signature; False when it was already recorded (a replay)."""
        ...


class Authenticator:
    """Checks credentials against a miner lookup and a replay guard, with an injected clock."""

    def __init__(
        self,
        miners: MinerLookup,
        replays: ReplayGuard,
        clock: Callable[[], datetime],
        window: timedelta = DEFAULT_TIMESTAMP_WINDOW,
        *,
        require_request_scope: bool = False,
    ) -> None:
        self._miners = miners
        self._replays = replays
        self._clock = clock
        self._window = window
        self._require_request_scope = require_request_scope

    def authenticate(
        self,
        credentials: HotkeyCredentials | BearerCredentials,
        body: bytes,
        target: RequestTarget | None = None,
    ) -> AuthenticatedMiner:
        """Return the miner the credentials prove; raises AuthenticationError otherwise.

        ``target`` is what a request-scope signature covers besides the body (a request
        without one cannot be authenticated by such a signature).
        """
        if isinstance(credentials, BearerCredentials):
            return self._authenticate_token(credentials)
        return self._authenticate_signature(credentials, body, target)

    def _authenticate_signature(
        self, credentials: HotkeyCredentials, body: bytes, target: RequestTarget | None
    ) -> AuthenticatedMiner:
        scope = credentials.scope
        if self._require_request_scope and scope is not SignatureScope.REQUEST:
            raise AuthenticationError(
                "this verifier requires signatures that also cover the method and path: "
                f"send {SIGNATURE_SCOPE_HEADER}: request and sign "
                '"{hotkey}:{nonce}:{body digest or tee}:{METHOD}:{path}"'
            )
        if scope is SignatureScope.REQUEST and target is None:
            raise AuthenticationError(
                "a request-scope signature needs the request's method and path"
            )
        now = self._clock()
        signed_at = self._check_timestamp(credentials.timestamp_seconds, now)
        public_key = hotkey_public_key(credentials.hotkey)
        signature = parse_signature(credentials.signature)
        message = signing_message(
            credentials.hotkey,
            credentials.timestamp,
            body,
            scope=scope,
            method=target.method if target is not None else "",
            path=target.path if target is not None else "",
        )
        if not signature_is_valid(public_key, message, signature):
            covered = "body" if scope is SignatureScope.BODY else "body, method and path"
            raise AuthenticationError(
                f"X-Chutes-Signature does not verify for this hotkey, timestamp and {covered}"
            )
        if not self._miners.is_registered(credentials.hotkey):
            raise AuthenticationError("X-Chutes-Hotkey is not a registered miner")
        # Past signed_at + window the timestamp check refuses the signature anyway, so the
        # replay record only has to live that long.
        expires_at = signed_at + self._window
        if not self._replays.claim(
            hashlib.sha256(signature).hexdigest(), credentials.hotkey, expires_at
        ):
            raise AuthenticationError("X-Chutes-Signature was already used (replay)")
        return AuthenticatedMiner(hotkey=credentials.hotkey, method="signature")

    def _check_timestamp(self, seconds: int, now: datetime) -> datetime:
        try:
            signed_at = datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise AuthenticationError(f"{NONCE_HEADER} is not a usable unix timestamp") from None
        skew = abs(now - signed_at)
        if skew > self._window:
            window_s = int(self._window.total_seconds())
            raise AuthenticationError(
                f"{NONCE_HEADER} timestamp is {int(skew.total_seconds())} s away from the "
                f"server clock (allowed: {window_s} s)"
            )
        return signed_at

    def _authenticate_token(self, credentials: BearerCredentials) -> AuthenticatedMiner:
        digest = token_digest(credentials.token)
        found = self._miners.hotkey_for_token_digest(digest)
        if found is None or not digests_match(found[1], digest):
            raise AuthenticationError("bearer token is not valid")
        return AuthenticatedMiner(hotkey=found[0], method="token")
