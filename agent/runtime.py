"""Runtime attestation of a registered server (after boot, e.g. from a systemd timer).

GET /servers/{id}/nonce, then POST /servers/{id}/attestation with ``{"quote"}`` (and
``"event_log"`` when the firmware's log is available) where the quote's REPORTDATA is
nonce (32 bytes) || 32 zero bytes; both requests signed by the miner (agent.auth), the
signatures covering the method and path as well as the body.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote as url_quote

from agent import protocol
from agent.api import BootClient, Deadline, retry_until
from agent.auth import RequestSigner

_PADDING = bytes(protocol.REPORT_DATA_BYTES - protocol.NONCE_BYTES)


def runtime_paths(server_id: str) -> tuple[str, str]:
    """(nonce path, attestation path) for ``server_id``. Raises nothing."""
    base = f"/servers/{url_quote(server_id, safe='')}"
    return f"{base}/nonce", f"{base}/attestation"


def attest_runtime(
    client: BootClient, signer: RequestSigner, server_id: str, deadline_seconds: float
) -> dict[str, Any]:
    """Run one runtime attestation (retrying transient failures); return the server's answer.

    Raises ServerRefused, DeadlineExceeded, TransportError or TsmError.
    """
    nonce_path, attestation_path = runtime_paths(server_id)
    deadline = Deadline.after(deadline_seconds, client.clock)

    def attempt() -> dict[str, Any]:
        nonce_headers = signer.headers("GET", nonce_path, b"")
        nonce = client.get_nonce(deadline, nonce_path, headers=nonce_headers)
        quote = client.quotes.get_quote(nonce + _PADDING)
        fields = client.with_event_log({"quote": protocol.b64encode(quote)})
        body = json.dumps(fields).encode()
        headers = signer.headers("POST", attestation_path, body)
        return client.request("POST", attestation_path, deadline, body=body, headers=headers)

    return retry_until(deadline, attempt, sleep=client.sleep, on_retry=client.on_retry)
