"""Runtime attestation of a registered server (after boot, e.g. from a systemd timer).

GET /servers/{id}/nonce, then POST /servers/{id}/attestation with ``{"quote",
"identity_signature"}`` (and ``"event_log"`` when the firmware's log is available). The
quote's REPORTDATA is nonce || runtime_identity_binding(this boot's identity key) and the
identity key signs runtime_signature_message(server id, nonce, quote) (protocol v2), so
the verifier knows the answer comes from the TD that booted the server. Both requests
are signed by the miner (agent.auth).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote as url_quote

from tdx_boot_attest.agent import protocol
from tdx_boot_attest.agent.auth import RequestSigner
from tdx_boot_attest.agent.http_client import BootClient, Deadline, retry_until
from tdx_boot_attest.agent.identity import Identity


def runtime_paths(server_id: str) -> tuple[str, str]:
    """(nonce path, attestation path) for ``server_id``. Raises nothing."""
    base = f"/servers/{url_quote(server_id, safe='')}"
    return f"{base}/nonce", f"{base}/attestation"


def attest_runtime(
    client: BootClient,
    signer: RequestSigner,
    identity: Identity,
    server_id: str,
    deadline_seconds: float,
) -> dict[str, Any]:
    """Run one runtime attestation (retrying transient failures); return the server's answer.

    Raises ServerRefused, DeadlineExceeded, TransportError or TsmError.
    """
    nonce_path, attestation_path = runtime_paths(server_id)
    deadline = Deadline.after(deadline_seconds, client.clock)

    def attempt() -> dict[str, Any]:
        nonce_headers = signer.headers("GET", nonce_path, b"")
        nonce = client.get_nonce(deadline, nonce_path, headers=nonce_headers)
        quote = client.quotes.get_quote(protocol.runtime_report_data(nonce, identity.public_key))
        signature = identity.sign(protocol.runtime_signature_message(server_id, nonce, quote))
        fields = client.with_event_log(
            {
                "quote": protocol.b64encode(quote),
                "identity_signature": protocol.b64encode(signature),
            }
        )
        body = json.dumps(fields).encode()
        headers = signer.headers("POST", attestation_path, body)
        return client.request("POST", attestation_path, deadline, body=body, headers=headers)

    return retry_until(deadline, attempt, sleep=client.sleep, on_retry=client.on_retry)
