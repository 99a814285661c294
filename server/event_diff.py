"""Explaining a measurement mismatch event by event (pure: no I/O).

When a quote matches no image, the registers that differ from the closest image are
compared event by event: the events a boot's log holds for that register against the
image's reference events. The two lists are aligned by event type and name (so one
inserted event does not make every later one "differ"), then digests are compared. Each
difference names the event, the component it measures and both digests.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from tdx_boot_attest.agent.eventlog import Event, component

# Enough to name what changed on a console line; the body carries every difference.
_MESSAGE_DIFFERENCES: Final = 4
_SHORT: Final = 8


class Difference(NamedTuple):
    """One event that differs between a boot's log and an image's reference events.

    ``event_index`` is the event's position in the boot's log (None when the log lacks it);
    ``received`` / ``approved`` are SHA-384 digests as hex (None when that side lacks
    the event).
    """

    register: str
    event_index: int | None
    name: str
    component: str | None
    received: str | None
    approved: str | None
    approved_detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON form used in refusal bodies and audit rows. Raises nothing."""
        return {
            "rtmr": self.register,
            "event_index": self.event_index,
            "event": self.name,
            "component": self.component,
            "digest_received": self.received,
            "digest_approved": self.approved,
            "approved_detail": self.approved_detail,
        }

    def describe(self) -> str:
        """``"Linux initrd" (initrd) 9f2c…≠41d0…``, or a missing / extra event. Raises nothing."""
        what = self.name if self.component is None else f"{self.name} ({self.component})"
        if self.received is None:
            return f"{what} is missing"
        if self.approved is None:
            return f"{what} is not in the image"
        return f"{what} {self.received[:_SHORT]}…≠{self.approved[:_SHORT]}…"


def _key(event: Event) -> tuple[int, str]:
    return (event.event_type, event.name)


def _digest(event: Event) -> str | None:
    digest = event.sha384
    return None if digest is None else digest.hex()


def _difference(register: str, received: Event | None, approved: Event | None) -> Difference:
    shown = received if received is not None else approved
    assert shown is not None  # noqa: S101 - one side is always present
    return Difference(
        register=register,
        event_index=None if received is None else received.index,
        name=shown.name,
        component=component(shown),
        received=None if received is None else _digest(received),
        approved=None if approved is None else _digest(approved),
        approved_detail=(approved.detail or None) if approved is not None else None,
    )


def register_differences(
    register: int, received: Sequence[Event], approved: Sequence[Event]
) -> list[Difference]:
    """The events of RTMR ``register`` that differ between the two lists. Raises nothing."""
    name = f"rtmr{register}"
    mine = [e for e in received if e.extends and e.rtmr == register]
    theirs = [e for e in approved if e.extends and e.rtmr == register]
    matcher = difflib.SequenceMatcher(
        None, [_key(e) for e in mine], [_key(e) for e in theirs], autojunk=False
    )
    out: list[Difference] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        pairs = list(zip(mine[i1:i2], theirs[j1:j2], strict=False))
        if tag in ("equal", "replace"):
            out += [_difference(name, a, b) for a, b in pairs if _digest(a) != _digest(b)]
        out += [_difference(name, a, None) for a in mine[i1 + len(pairs) : i2]]
        out += [_difference(name, None, b) for b in theirs[j1 + len(pairs) : j2]]
    return out


def explain(
    registers: Sequence[str], received: Sequence[Event], approved: Sequence[Event]
) -> tuple[list[Difference], list[str]]:
    """Differences for each differing register, and the registers left unexplained.

    A register is unexplained when it is not an RTMR (MRTD, MRCONFIGID, ...), or when
    neither list has an event that accounts for the difference. Raises nothing.
    """
    differences: list[Difference] = []
    unexplained: list[str] = []
    for register in registers:
        if not register.startswith("rtmr"):
            unexplained.append(register)
            continue
        found = register_differences(int(register[4:]), received, approved)
        if found:
            differences += found
        else:
            unexplained.append(register)
    return differences, unexplained


def mismatch_message(
    registers: Sequence[str],
    image: str,
    differences: Sequence[Difference],
    unexplained: Sequence[str],
) -> str:
    """One line naming what differs from ``image``. Raises nothing.

    ``rtmr2 differs from image web-1: "Linux initrd" (initrd) 9f2c…≠41d0…; everything else
    equal`` when the events explain every differing register.
    """
    verb = "differs" if len(registers) == 1 else "differ"
    parts = [d.describe() for d in differences[:_MESSAGE_DIFFERENCES]]
    if len(differences) > _MESSAGE_DIFFERENCES:
        parts.append(f"and {len(differences) - _MESSAGE_DIFFERENCES} more events")
    if unexplained:
        firmware = ", ".join(unexplained)
        parts.append(
            f"{firmware} differ{'s' if len(unexplained) == 1 else ''} (no event explains it)"
        )
    else:
        parts.append("everything else equal")
    return f"{', '.join(registers)} {verb} from image {image}: {'; '.join(parts)}"
