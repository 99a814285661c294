"""The audit record of an attestation attempt: the columns boot and runtime rows share.

No I/O. Boot attempts (server.boot.store) and runtime attempts (server.fleet.store) build
their rows from one AttemptRecord, made by attempt_record, so both store a refusal, a
quote's registers and the client's address the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

from tdx_boot_attest.server.bookkeeping import storable_text
from tdx_boot_attest.server.dcap import DcapVerdict
from tdx_boot_attest.server.errors import ServerError
from tdx_boot_attest.server.quote import TdQuote

CLIENT_IP_MAX_CHARS = 64


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """What every attempt records, accepted or refused; field names are column names."""

    id: str
    created_at: datetime
    reason: str | None
    message: str | None
    client_ip: str | None
    nonce: str | None
    image_name: str | None
    quote: bytes | None
    tcb_status: str | None
    event_log: bytes | None
    differences: str | None
    identity_key: str | None
    mrtd: str | None
    rtmr0: str | None
    rtmr1: str | None
    rtmr2: str | None
    rtmr3: str | None

    @property
    def accepted(self) -> bool:
        """True when the attempt was not refused. Raises nothing."""
        return self.reason is None

    def refused(self, refusal: ServerError) -> AttemptRecord:
        """The same attempt, refused for ``refusal`` (e.g. its nonce was spent first)."""
        return replace(self, reason=refusal.reason.value, message=refusal.message)

    def columns(self) -> dict[str, Any]:
        """Column name -> value, for an INSERT or an ORM constructor. Raises nothing."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


def attempt_record(
    *,
    attempt_id: str,
    now: datetime,
    refusal: ServerError | None,
    client_ip: str | None,
    nonce: str | None,
    image_name: str | None,
    quote_raw: bytes | None,
    quote: TdQuote | None,
    dcap: DcapVerdict | None,
    event_log_raw: bytes | None,
    identity_key: str | None,
) -> AttemptRecord:
    """The record of one attempt; client text is cut and escaped so it can be stored.

    Raises nothing.
    """
    return AttemptRecord(
        id=attempt_id,
        created_at=now,
        reason=None if refusal is None else refusal.reason.value,
        message=None if refusal is None else storable_text(refusal.message),
        client_ip=storable_text(client_ip, CLIENT_IP_MAX_CHARS),
        nonce=nonce,
        image_name=image_name,
        quote=quote_raw,
        tcb_status=dcap.tcb_status if dcap is not None else None,
        event_log=event_log_raw,
        differences=differences_json(refusal),
        identity_key=identity_key,
        mrtd=quote.mrtd if quote is not None else None,
        rtmr0=quote.rtmrs[0] if quote is not None else None,
        rtmr1=quote.rtmrs[1] if quote is not None else None,
        rtmr2=quote.rtmrs[2] if quote is not None else None,
        rtmr3=quote.rtmrs[3] if quote is not None else None,
    )


def differences_json(refusal: ServerError | None) -> str | None:
    """The structured explanation of a refusal, as stored with the attempt."""
    if refusal is None or "differences" not in refusal.details:
        return None
    return json.dumps(refusal.details["differences"], sort_keys=True)
