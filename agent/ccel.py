"""Reading the firmware's event log (CCEL) for sending; the format itself is agent.eventlog.

Linux exposes the log area that the ACPI CCEL table describes at
``/sys/firmware/acpi/tables/data/CCEL`` (root only). The area is padded to its full size;
the agent sends only the records, after checking that they parse, so a verifier never
has to store the padding and a broken log is reported where it was read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, NamedTuple

from tdx_boot_attest.agent.errors import AgentError, LocalReason
from tdx_boot_attest.agent.eventlog import EventLogError, parse_event_log
from tdx_boot_attest.agent.protocol import MAX_EVENT_LOG_BYTES, Reason

# Larger than any log area firmware reserves, so the padding never hides a too-long log.
_READ_LIMIT: Final = 16 * 1024 * 1024


class EventLogUnavailable(AgentError):
    """The configuration requires the event log and it cannot be read or sent."""

    exit_code = 3

    def __init__(self, message: str) -> None:
        super().__init__(LocalReason.EVENT_LOG_UNAVAILABLE, message)


class EventLogMismatch(AgentError):
    """The event log's replay differs from the TD's own RTMRs (it is not this boot's)."""

    exit_code = 3

    def __init__(self, message: str) -> None:
        super().__init__(Reason.EVENT_LOG_MISMATCH, message)


class EventLogRead(NamedTuple):
    """The log's records ready to send, or None with the reason none can be sent."""

    data: bytes | None
    problem: str | None = None


def read_event_log(path: Path) -> EventLogRead:
    """Read the log at ``path`` and cut its padding. Raises nothing: problems are returned.

    No file (an older kernel, or not a TD), an unreadable one, a malformed log or one
    too large to send all give ``data=None`` and a sentence naming the cause.
    """
    try:
        with path.open("rb") as handle:
            raw = handle.read(_READ_LIMIT + 1)
    except FileNotFoundError:
        return EventLogRead(None, f"no event log at {path} (a kernel without CCEL, or not a TD)")
    except OSError as exc:
        return EventLogRead(None, f"cannot read the event log {path}: {exc.strerror or exc}")
    try:
        log = parse_event_log(raw, max_bytes=_READ_LIMIT)
    except EventLogError as exc:
        return EventLogRead(None, f"the event log {path} is malformed: {exc}")
    if log.length > MAX_EVENT_LOG_BYTES:
        return EventLogRead(
            None,
            f"the event log {path} holds {log.length} bytes of records, more than the "
            f"{MAX_EVENT_LOG_BYTES} a verifier accepts",
        )
    return EventLogRead(raw[: log.length])


def event_log_to_send(path: Path, *, required: bool) -> EventLogRead:
    """The log to send with each attestation (see read_event_log).

    Raises EventLogUnavailable when ``required`` and no log can be sent.
    """
    result = read_event_log(path)
    if result.data is None and required:
        raise EventLogUnavailable(
            f"{result.problem}; [eventlog] required = true, so the boot cannot attest"
        )
    return result
