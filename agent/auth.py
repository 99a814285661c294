"""Miner authentication for runtime attestation: Chutes hotkey signatures or a bearer token.

A hotkey signature covers ``"{hotkey}:{timestamp}:{X}"`` where X is the SHA-256 hex of
the request body, or the purpose string ``tee`` for a request without a body (the Chutes
form); the agent signs the stronger form that also covers ``":{METHOD}:{path}"`` and says
so with ``X-Attest-Signature-Scope: request`` (agent.protocol.request_signing_message).
The hotkey file is a Bittensor-style JSON keyfile (``secretSeed`` and ``ss58Address``).
sr25519 comes from py-sr25519-bindings (the ``runtime`` extra), imported only here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from tdx_boot_attest.agent.errors import AgentError, LocalReason
from tdx_boot_attest.agent.package_info import install_hint
from tdx_boot_attest.agent.protocol import (
    HOTKEY_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    SIGNATURE_PURPOSE,
    SIGNATURE_SCOPE_HEADER,
    SignatureScope,
    request_signing_message,
)

PURPOSE: Final = SIGNATURE_PURPOSE


class HotkeyError(AgentError):
    """The hotkey file or token cannot be used; the message says which field."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(LocalReason.HOTKEY_INVALID, message)


def _sr25519() -> Any:
    """The sr25519 module; raises HotkeyError naming the extra when it is not installed."""
    try:
        import sr25519
    except ModuleNotFoundError:
        raise HotkeyError(
            "signing with a hotkey needs py-sr25519-bindings, the 'runtime' extra: "
            f"{install_hint('runtime')}"
        ) from None
    return sr25519


class RequestSigner(Protocol):
    """Produces the authentication headers for one request."""

    def headers(self, method: str, path: str, body: bytes) -> dict[str, str]:
        """Headers authenticating ``method path`` whose raw body is ``body`` (b"" for none)."""


def signing_message(
    hotkey: str, timestamp: str, body: bytes, method: str = "", path: str = ""
) -> bytes:
    """The exact bytes a miner signs: the Chutes form without ``method``, else the form
    that also covers the method and path. Raises nothing."""
    scope = SignatureScope.REQUEST if method else SignatureScope.BODY
    return request_signing_message(hotkey, timestamp, body, scope=scope, method=method, path=path)


@dataclass
class HotkeySigner:
    """Signs requests with an sr25519 key pair whose SS58 address is ``hotkey``."""

    hotkey: str
    public_key: bytes
    secret_key: bytes = field(repr=False)
    clock: Callable[[], float] = time.time

    @classmethod
    def from_file(cls, path: Path, clock: Callable[[], float] = time.time) -> HotkeySigner:
        """Load a JSON hotkey file; raises HotkeyError naming the problem (never the secret)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise HotkeyError(f"cannot read hotkey file {path}: {exc}") from None
        except ValueError:
            raise HotkeyError(f"hotkey file {path} is not JSON") from None
        if not isinstance(data, dict):
            raise HotkeyError(f"hotkey file {path} is not a JSON object")
        address = data.get("ss58Address")
        seed_hex = data.get("secretSeed")
        if not isinstance(address, str) or not address:
            raise HotkeyError(f"hotkey file {path} has no 'ss58Address'")
        if not isinstance(seed_hex, str):
            raise HotkeyError(f"hotkey file {path} has no 'secretSeed'")
        try:
            seed = bytes.fromhex(seed_hex.removeprefix("0x"))
        except ValueError:
            raise HotkeyError(f"'secretSeed' in {path} is not hexadecimal") from None
        if len(seed) != 32:
            raise HotkeyError(f"'secretSeed' in {path} must be 32 bytes")
        public, secret = _sr25519().pair_from_seed(seed)
        declared = data.get("publicKey")
        if isinstance(declared, str) and bytes.fromhex(declared.removeprefix("0x")) != bytes(
            public
        ):
            raise HotkeyError(f"'publicKey' in {path} does not belong to its 'secretSeed'")
        return cls(address, bytes(public), bytes(secret), clock)

    def headers(self, method: str, path: str, body: bytes) -> dict[str, str]:
        """X-Chutes-Hotkey / -Nonce (unix seconds) / -Signature over the body, method and
        path, with X-Attest-Signature-Scope: request. Raises nothing."""
        sr25519 = _sr25519()
        timestamp = str(int(self.clock()))
        message = signing_message(self.hotkey, timestamp, body, method, path)
        signature = bytes(sr25519.sign((self.public_key, self.secret_key), message)).hex()
        return {
            HOTKEY_HEADER: self.hotkey,
            NONCE_HEADER: timestamp,
            SIGNATURE_HEADER: signature,
            SIGNATURE_SCOPE_HEADER: SignatureScope.REQUEST.value,
        }


@dataclass
class BearerSigner:
    """Authenticates with ``Authorization: Bearer <token>``."""

    token: str = field(repr=False)

    def headers(self, method: str, path: str, body: bytes) -> dict[str, str]:
        """The Authorization header. Raises nothing."""
        return {"Authorization": f"Bearer {self.token}"}
