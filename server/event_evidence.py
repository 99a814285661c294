"""The firmware event log an agent sends: decoded, parsed, and checked against the quote.

Steps shared by boot and runtime attestation. Decoding and parsing are input checks (a
malformed log is a 422 before anything is spent); the replay check needs a quote whose
RTMRs DCAP has verified, so it runs after verification: every register that at least one
event extends must replay exactly to the quote's value, or the log belongs to another
boot (or was altered) and the attempt is refused with ``event_log_mismatch``. Registers
the log does not cover are left to measurement matching (runtime software may extend
RTMR3 without a log entry).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from tdx_boot_attest.agent.eventlog import (
    Event,
    EventLog,
    EventLogError,
    covered_registers,
    parse_event_log,
    replay,
)
from tdx_boot_attest.agent.protocol import MAX_EVENT_LOG_BYTES, ProtocolError, Reason, b64decode
from tdx_boot_attest.server.errors import AttestationRefused, RequestInvalid
from tdx_boot_attest.server.quote import RTMR_NAMES, TdQuote

# Base64 of MAX_EVENT_LOG_BYTES, plus padding: longer text is refused before decoding.
MAX_EVENT_LOG_BASE64_CHARS = 4 * ((MAX_EVENT_LOG_BYTES + 2) // 3)


class EventLogEvidence(NamedTuple):
    """A request's event log: its bytes (for the audit row) and its parse."""

    raw: bytes
    log: EventLog

    @property
    def covered(self) -> list[str]:
        """Names of the registers the log covers (``rtmr0``...). Raises nothing."""
        return [RTMR_NAMES[n] for n in sorted(self.log.covered())]


def decode_event_log_field(text: str) -> bytes:
    """Decode the ``event_log`` field (strict base64, at most MAX_EVENT_LOG_BYTES).

    Raises RequestInvalid(event_log_invalid) naming the problem.
    """
    if len(text) > MAX_EVENT_LOG_BASE64_CHARS:
        raise RequestInvalid(
            f"event_log is larger than {MAX_EVENT_LOG_BYTES} bytes; send the log's records "
            "without the padding of its area",
            Reason.EVENT_LOG_INVALID,
        )
    try:
        raw = b64decode(text, "event_log", Reason.EVENT_LOG_INVALID)
    except ProtocolError as exc:
        raise RequestInvalid(str(exc), exc.reason) from None
    if len(raw) > MAX_EVENT_LOG_BYTES:
        raise RequestInvalid(
            f"event_log is {len(raw)} bytes, larger than {MAX_EVENT_LOG_BYTES}",
            Reason.EVENT_LOG_INVALID,
        )
    return raw


def parse_event_log_field(raw: bytes) -> EventLogEvidence:
    """Parse a decoded event log. Raises RequestInvalid(event_log_invalid) naming the offset."""
    try:
        log = parse_event_log(raw, max_bytes=MAX_EVENT_LOG_BYTES)
    except EventLogError as exc:
        raise RequestInvalid(str(exc), Reason.EVENT_LOG_INVALID) from None
    return EventLogEvidence(raw, log)


def replay_mismatches(events: Sequence[Event], rtmrs: Sequence[str]) -> list[str]:
    """For each register the events cover whose replay is not ``rtmrs`` (hex), a phrase
    naming both values; empty when they agree. Raises nothing.
    """
    replayed = replay(events)
    return [
        f"{RTMR_NAMES[n]} replays to {replayed[n].hex()[:16]}… but is {rtmrs[n][:16]}…"
        for n in sorted(covered_registers(events))
        if replayed[n].hex() != rtmrs[n]
    ]


def check_replay(evidence: EventLogEvidence, quote: TdQuote) -> None:
    """Refuse a log whose replay differs from the verified quote in a register it covers.

    Raises AttestationRefused(event_log_mismatch) naming each such register.
    """
    wrong = replay_mismatches(evidence.log.events, quote.rtmrs)
    if wrong:
        raise AttestationRefused(
            f"the event log does not belong to this quote: {'; '.join(wrong)} in the quote "
            "(a log from another boot, or an altered one)",
            Reason.EVENT_LOG_MISMATCH,
        )
