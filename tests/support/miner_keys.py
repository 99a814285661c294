"""Real sr25519 miner keys for tests, and request signing the way a Chutes miner signs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import sr25519
from scalecodec.utils.ss58 import ss58_encode

from tdx_boot_attest.agent.protocol import SIGNATURE_SCOPE_HEADER, SignatureScope
from tdx_boot_attest.server.auth.hotkey import DEFAULT_SS58_FORMAT, SR25519_PUBLIC_KEY_BYTES
from tdx_boot_attest.server.auth.signing import signing_message


def hotkey_address(public_key: bytes, ss58_format: int = DEFAULT_SS58_FORMAT) -> str:
    """Encode a 32-byte sr25519 public key as an SS58 address; raises ValueError on bad input."""
    if len(public_key) != SR25519_PUBLIC_KEY_BYTES:
        raise ValueError("an sr25519 public key is 32 bytes")
    return str(ss58_encode(public_key, ss58_format))


def sign_message(keypair: tuple[bytes, bytes], message: bytes) -> str:
    """Sign ``message`` with an sr25519 ``(public, secret)`` key pair; return hex.

    Raises ValueError for a malformed key pair.
    """
    signature = sr25519.sign(keypair, message)
    return bytes(signature).hex()


@dataclass(frozen=True)
class MinerKey:
    """An sr25519 key pair and its SS58 hotkey address."""

    public_key: bytes
    secret_key: bytes
    hotkey: str

    @classmethod
    def from_seed(cls, seed: int | bytes) -> MinerKey:
        """A deterministic key pair from a small integer or a 32-byte seed."""
        raw = hashlib.sha256(str(seed).encode()).digest() if isinstance(seed, int) else seed
        public, secret = sr25519.pair_from_seed(raw)
        return cls(bytes(public), bytes(secret), hotkey_address(bytes(public)))

    def sign(
        self, timestamp: int | str, body: bytes = b"", method: str = "", path: str = ""
    ) -> str:
        """Hex signature of ``"{hotkey}:{timestamp}:{sha256(body) or 'tee'}"`` (the Chutes
        form), followed by ``":{METHOD}:{path}"`` when ``method`` is given."""
        scope = SignatureScope.REQUEST if method else SignatureScope.BODY
        message = signing_message(
            self.hotkey, str(timestamp), body, scope=scope, method=method, path=path
        )
        return sign_message((self.public_key, self.secret_key), message)

    def headers(
        self, timestamp: int | str, body: bytes = b"", method: str = "", path: str = ""
    ) -> dict[str, str]:
        """The three X-Chutes-* headers for a request with ``body`` (with ``method``: a
        request-scope signature and its X-Attest-Signature-Scope header)."""
        headers = {
            "X-Chutes-Hotkey": self.hotkey,
            "X-Chutes-Nonce": str(timestamp),
            "X-Chutes-Signature": self.sign(timestamp, body, method, path),
        }
        if method:
            headers[SIGNATURE_SCOPE_HEADER] = SignatureScope.REQUEST.value
        return headers


def json_body(payload: Any) -> bytes:
    """Compact JSON bytes: sign exactly these and send them as the request body."""
    return json.dumps(payload, separators=(",", ":")).encode()
