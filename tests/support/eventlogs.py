"""Realistic event logs for tests: the real QEMU direct-boot log with chosen components.

The events are those of ``tests/assets/eventlog/qemu-direct-boot-initrd.ccel`` (a real
TDVF boot), with the digests of the kernel (boot application), the command line and the
initrd tags replaced by those of test inputs, so a test can change one component and
see which event a verifier names.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from agent.eventlog import (
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EVENT_TAG,
    Event,
    computed_event,
    encode_event_log,
    linux_tag,
    parse_event_log,
    replay,
)
from tdxsim.profile import Profile

REAL_LOG = (
    Path(__file__).resolve().parent.parent
    / "assets"
    / "eventlog"
    / ("qemu-direct-boot-initrd.ccel")
)


@dataclass(frozen=True)
class Components:
    """What a test boot measures, by name."""

    kernel: bytes = b"vmlinuz 6.1.0-test"
    initrd: bytes = b"initrd.img 6.1.0-test"
    cmdline: str = "console=ttyS0 root=/dev/mapper/root ro"


def _measured(event: Event, components: Components) -> bytes | None:
    if event.event_type == EV_EFI_BOOT_SERVICES_APPLICATION:
        return hashlib.sha384(components.kernel).digest()
    if event.event_type == EV_EVENT_TAG:
        if linux_tag(event.data) == "Linux initrd":
            return hashlib.sha384(components.initrd).digest()
        text = (components.cmdline + " initrd=initrd").encode("utf-16-le") + b"\x00\x00"
        return hashlib.sha384(text).digest()
    return None


def direct_boot_events(components: Components | None = None) -> list[Event]:
    """The real log's events with ``components`` measured in RTMR1 and RTMR2."""
    chosen = components or Components()
    out = []
    for event in parse_event_log(REAL_LOG.read_bytes()).events:
        digest = _measured(event, chosen)
        out.append(
            event
            if digest is None
            else computed_event(
                event.mr_index, event.event_type, event.data, digest, index=event.index
            )
        )
    return out


def direct_boot_log(components: Components | None = None) -> bytes:
    """The CCEL bytes (records only) of direct_boot_events(components)."""
    return encode_event_log(direct_boot_events(components))


def profile_for(events: list[Event], base: Profile | None = None) -> Profile:
    """``base`` (default: tdxsim's default profile) with the RTMRs the events replay to."""
    rtmrs = [value.hex() for value in replay(events)]
    return (base or Profile.default()).with_rtmrs(rtmrs)
