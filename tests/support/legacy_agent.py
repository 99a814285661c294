"""A client that speaks protocol v1.1 exactly, as agents before v2 do (not the agent's code).

Boot: REPORTDATA = nonce || SHA-256(HPKE public key), body ``{"quote", "public_key",
"kem"}``, no identity key. Runtime: REPORTDATA = nonce || 32 zero bytes, body
``{"quote"}``, requests signed in the Chutes form (hotkey, timestamp, body). The quotes
come from a real configfs-tsm tree (the simulator's FUSE device in the tests), through
the same file ABI every agent version uses.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import x25519

from tdx_boot_attest.agent.protocol import Kem, hpke_suite, key_release_info
from tdx_boot_attest.agent.tsm import TsmQuoteProvider
from tests.support.miner_keys import MinerKey


class LegacyAgent:
    """One TD's v1.1 client: its configfs-tsm report directory and the verifier's URL."""

    def __init__(self, base_url: str, tsm_root: Path) -> None:
        self.base_url = base_url.rstrip("/")
        self.quotes = TsmQuoteProvider(tsm_root)

    def boot(self) -> tuple[httpx.Response, bytes | None]:
        """One v1.1 boot attestation; (the answer, the opened passphrase when released)."""
        nonce = bytes.fromhex(httpx.get(f"{self.base_url}/servers/nonce").json()["nonce"])
        private = x25519.X25519PrivateKey.generate()
        public = private.public_key().public_bytes_raw()
        quote = self.quotes.get_quote(nonce + hashlib.sha256(public).digest())
        answer = httpx.post(
            f"{self.base_url}/servers/boot/attestation",
            headers={"X-Chutes-Nonce": nonce.hex()},
            json={
                "quote": base64.b64encode(quote).decode(),
                "public_key": base64.b64encode(public).decode(),
                "kem": "x25519",
            },
            timeout=60,
        )
        if answer.status_code != 200:
            return answer, None
        sealed = base64.b64decode(answer.json()["sealed_key"])
        return answer, hpke_suite(Kem.X25519).decrypt(sealed, private, key_release_info(nonce))

    def runtime(self, miner: MinerKey, server_id: str) -> httpx.Response:
        """One v1.1 runtime attestation of ``server_id``, signed by ``miner`` (Chutes form)."""
        nonce_answer = httpx.get(
            f"{self.base_url}/servers/{server_id}/nonce", headers=miner.headers(int(time.time()))
        )
        nonce_answer.raise_for_status()
        nonce = bytes.fromhex(nonce_answer.json()["nonce"])
        quote = self.quotes.get_quote(nonce + bytes(32))
        body = json.dumps({"quote": base64.b64encode(quote).decode()}).encode()
        headers: dict[str, Any] = {
            "Content-Type": "application/json",
            **miner.headers(int(time.time()), body),
        }
        return httpx.post(
            f"{self.base_url}/servers/{server_id}/attestation",
            content=body,
            headers=headers,
            timeout=60,
        )
