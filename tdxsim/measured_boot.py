"""Measured boot: RTMR extension and replay of a simple event log.

An RTMR starts at 48 zero bytes and is extended as ``new = SHA-384(old || digest)``, where
``digest`` is a 48-byte SHA-384 digest of what was measured (as TDX's TDG.MR.RTMR.EXTEND
does). The event log is JSON lines, one event per line::

    {"rtmr": 1, "data": "vmlinuz-6.1.0-18-amd64", "description": "kernel"}
    {"rtmr": 2, "data_hex": "636f6e736f6c653d747479533000", "description": "cmdline"}
    {"rtmr": 0, "digest": "<96 hex digits>", "description": "already hashed"}

``data`` (UTF-8 text) or ``data_hex`` is hashed with SHA-384 before extending; ``digest``
is extended as given. Blank lines and lines starting with ``#`` are ignored. No I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from tdxsim.errors import EventLogError
from tdxsim.profile import Profile

RTMR_COUNT: Final = 4
RTMR_BYTES: Final = 48


def extend(register: bytes, digest: bytes) -> bytes:
    """SHA-384(register || digest); raises EventLogError unless both are 48 bytes."""
    if len(register) != RTMR_BYTES or len(digest) != RTMR_BYTES:
        raise EventLogError("RTMR values and extended digests must be 48 bytes (SHA-384)")
    return hashlib.sha384(register + digest).digest()


@dataclass(frozen=True, slots=True)
class Event:
    """One measurement: which RTMR, the SHA-384 digest extended into it, and a description."""

    rtmr: int
    digest: bytes
    description: str = ""

    @classmethod
    def of_data(cls, rtmr: int, data: bytes, description: str = "") -> Event:
        """An event measuring ``data`` (its SHA-384 digest). Raises EventLogError."""
        if rtmr not in range(RTMR_COUNT):
            raise EventLogError(f"rtmr must be 0..{RTMR_COUNT - 1}, got {rtmr}")
        return cls(rtmr, hashlib.sha384(data).digest(), description)

    def to_json(self) -> dict[str, Any]:
        """The event as a JSON object (digest form). Raises nothing."""
        return {"rtmr": self.rtmr, "digest": self.digest.hex(), "description": self.description}


def _event(line_no: int, data: Any) -> Event:
    where = f"event log line {line_no}"
    if not isinstance(data, dict):
        raise EventLogError(f"{where}: expected a JSON object")
    rtmr = data.get("rtmr")
    if not isinstance(rtmr, int) or isinstance(rtmr, bool) or rtmr not in range(RTMR_COUNT):
        raise EventLogError(f"{where}: rtmr must be an integer 0..{RTMR_COUNT - 1}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise EventLogError(f"{where}: description must be a string")
    sources = [key for key in ("digest", "data", "data_hex") if key in data]
    if len(sources) != 1:
        raise EventLogError(f"{where}: give exactly one of digest, data, data_hex")
    value = data[sources[0]]
    if not isinstance(value, str):
        raise EventLogError(f"{where}: {sources[0]} must be a string")
    if sources[0] == "data":
        return Event.of_data(rtmr, value.encode("utf-8"), description)
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise EventLogError(f"{where}: {sources[0]} is not hexadecimal") from None
    if sources[0] == "data_hex":
        return Event.of_data(rtmr, raw, description)
    if len(raw) != RTMR_BYTES:
        raise EventLogError(f"{where}: digest must be 48 bytes (SHA-384)")
    return Event(rtmr, raw, description)


def parse_event_log(text: str) -> list[Event]:
    """Parse JSON-lines event log text; raises EventLogError naming the bad line."""
    events = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise EventLogError(f"event log line {line_no}: not JSON ({exc.msg})") from None
        events.append(_event(line_no, data))
    return events


def format_event_log(events: Iterable[Event]) -> str:
    """Events as JSON-lines text (digest form) that parse_event_log reads back."""
    return "".join(json.dumps(e.to_json()) + "\n" for e in events)


def replay(
    events: Iterable[Event], initial: tuple[bytes, bytes, bytes, bytes] | None = None
) -> tuple[bytes, bytes, bytes, bytes]:
    """The four RTMRs after extending ``events`` in order from ``initial`` (zeros by default).

    Raises EventLogError for a malformed initial value.
    """
    registers = list(initial) if initial is not None else [bytes(RTMR_BYTES)] * RTMR_COUNT
    if len(registers) != RTMR_COUNT:
        raise EventLogError("exactly four initial RTMR values are needed")
    for event in events:
        registers[event.rtmr] = extend(registers[event.rtmr], event.digest)
    return (registers[0], registers[1], registers[2], registers[3])


def profile_from_events(base: Profile, events: Iterable[Event], name: str | None = None) -> Profile:
    """``base`` with RTMR0..3 replaced by the replay of ``events``. Raises EventLogError."""
    rtmrs = replay(events)
    profile = base.with_rtmrs([r.hex() for r in rtmrs])
    return profile.replace(name=name) if name is not None else profile
