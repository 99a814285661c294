"""A minimal, independent boot-protocol client for server tests (not the agent's code)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import x25519

from tdx_boot_attest.agent.protocol import (
    BOOT_ATTESTATION_PATH,
    NONCE_HEADER,
    NONCE_PATH,
    Kem,
    hpke_suite,
    key_release_info,
    report_data,
)


@dataclass
class AgentKey:
    """An ephemeral X25519 HPKE key pair as the agent makes one."""

    private: x25519.X25519PrivateKey

    @classmethod
    def generate(cls) -> AgentKey:
        return cls(x25519.X25519PrivateKey.generate())

    @property
    def public_raw(self) -> bytes:
        return self.private.public_key().public_bytes_raw()

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.public_raw).decode()

    def open(self, sealed_key_b64: str, nonce: bytes) -> bytes:
        """Open the server's sealed_key (raises on any tampering)."""
        return hpke_suite(Kem.X25519).decrypt(
            base64.b64decode(sealed_key_b64), self.private, key_release_info(nonce)
        )


def get_nonce(client: httpx.Client) -> bytes:
    """GET /servers/nonce and return the 32 nonce bytes."""
    response = client.get(NONCE_PATH)
    response.raise_for_status()
    return bytes.fromhex(response.json()["nonce"])


def post_quote(
    client: httpx.Client,
    quote: bytes | str,
    key: AgentKey,
    nonce_header: str | None,
    **extra: Any,
) -> httpx.Response:
    """POST /servers/boot/attestation with the given quote (bytes are base64-encoded)."""
    body: dict[str, Any] = {
        "quote": quote if isinstance(quote, str) else base64.b64encode(quote).decode(),
        "public_key": key.public_b64,
        **extra,
    }
    headers = {NONCE_HEADER: nonce_header} if nonce_header is not None else {}
    return client.post(BOOT_ATTESTATION_PATH, json=body, headers=headers)


def expected_report_data(nonce: bytes, key: AgentKey) -> bytes:
    """REPORTDATA the agent asks the TDX module to quote."""
    return report_data(nonce, key.public_raw)
