"""Real sr25519 miner keys for tests, and request signing the way a Chutes miner signs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import sr25519

from server.auth.hotkey import hotkey_address
from server.auth.signing import sign_message, signing_message


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

    def sign(self, timestamp: int | str, body: bytes = b"") -> str:
        """Hex signature of ``"{hotkey}:{timestamp}:{sha256(body) or 'tee'}"``."""
        message = signing_message(self.hotkey, str(timestamp), body)
        return sign_message((self.public_key, self.secret_key), message)

    def headers(self, timestamp: int | str, body: bytes = b"") -> dict[str, str]:
        """The three X-Chutes-* headers for a request with ``body``."""
        return {
            "X-Chutes-Hotkey": self.hotkey,
            "X-Chutes-Nonce": str(timestamp),
            "X-Chutes-Signature": self.sign(timestamp, body),
        }


def json_body(payload: Any) -> bytes:
    """Compact JSON bytes: sign exactly these and send them as the request body."""
    return json.dumps(payload, separators=(",", ":")).encode()
