"""Platform profiles: what a host type, not the image, decides about the measurements.

A profile is captured once per host type (firmware build, QEMU version, VM shape) from
a reference boot's quote and event log. It keeps MRTD, the firmware's events in the
order the log has them (RTMR0: TD HOB, configuration volume, Secure Boot variables,
separators, ACPI tables, BootOrder/Boot0000; RTMR1: the firmware's EFI actions), where
the image's own events go (the kernel, the Linux EFI stub's command line and initrd),
how to rebuild the TD HOB for another memory size, and how the host's QEMU hands the
kernel to the firmware. The JSON form is versioned (:data:`PROFILE_FORMAT`,
:data:`PROFILE_VERSION`) and documented in docs/measurements.md.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from tdx_boot_attest.agent.eventlog import (
    EV_EFI_ACTION,
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_HANDOFF_TABLES2,
    EV_EVENT_TAG,
    EV_NO_ACTION,
    Event,
    EventLogError,
    event_from_json,
    event_to_json,
    image_file_name,
    linux_tag,
    parse_event_log,
    replay,
)
from tdx_boot_attest.agent.measurement.efi import (
    ACTION_EXIT_BOOT_SERVICES,
    KERNEL_FILE_NAME,
    QEMU_KERNEL_LOADER_FS_MEDIA,
    derived_digest,
)
from tdx_boot_attest.agent.measurement.errors import (
    PlatformProfileError,
    ReferenceMismatchError,
    UnsupportedBootError,
)
from tdx_boot_attest.agent.measurement.linux_boot import INITRD_MAX_ABOVE_4G_FLAG, INITRD_MAX_RULES
from tdx_boot_attest.agent.measurement.memory import GIB, MIB, check_memory_size, format_memory_size
from tdx_boot_attest.agent.measurement.td_hob import EDK2_OVMF_LAYOUT, TdHobLayout, td_hob_digest
from tdx_boot_attest.agent.measurement.tdvf import (
    PAGE_ORDERS,
    compute_mrtd,
    read_tdvf_sections,
    td_hob_layout,
)

PROFILE_FORMAT: Final = "tdx-boot-attest/platform-profile"
PROFILE_VERSION: Final = 1
ROLE_FIRMWARE: Final = "firmware"
ROLE_TD_HOB: Final = "td_hob"
ROLE_KERNEL: Final = "kernel"
ROLE_LINUX_STUB: Final = "linux_stub"
ROLES: Final = (ROLE_FIRMWARE, ROLE_TD_HOB, ROLE_KERNEL, ROLE_LINUX_STUB)
KERNEL_HEADER_PATCHED: Final = "patched"
KERNEL_HEADER_UNMODIFIED: Final = "unmodified"
KERNEL_HEADER_MODES: Final = (KERNEL_HEADER_PATCHED, KERNEL_HEADER_UNMODIFIED)
QEMU_ACPI_DATA_SIZE: Final = 0x20000 + 0x8000  # pc/q35 machine types since QEMU 2.x
TD_HOB_SOURCE_FIRMWARE: Final = "firmware"
TD_HOB_SOURCE_EDK2: Final = "edk2-ovmf"
TD_HOB_SOURCE_PINNED: Final = "pinned"
TD_HOB_SOURCES: Final = (TD_HOB_SOURCE_FIRMWARE, TD_HOB_SOURCE_EDK2, TD_HOB_SOURCE_PINNED)
MRTD_SOURCE_QUOTE: Final = "quote"
# Reference memory sizes tried when the capture is not told the size: whole 256 MiB steps.
MEMORY_SEARCH_STEP: Final = 256 * MIB
MEMORY_SEARCH_LIMIT: Final = 4096 * GIB
MAX_TEMPLATE_EVENTS: Final = 512
_TD_HOB_TABLE: Final = struct.Struct("<Q16sQ")


@dataclass(frozen=True, slots=True)
class TdHobModel:
    """How to get the TD HOB digest: recomputed from a layout, or pinned to one size."""

    memory_bytes: int
    sha384: bytes
    source: str
    layout: TdHobLayout | None

    def digest_for(self, memory_bytes: int) -> bytes:
        """The TD HOB digest for ``memory_bytes``. Raises PlatformProfileError when pinned."""
        if self.layout is not None:
            return td_hob_digest(self.layout, memory_bytes)
        if memory_bytes != self.memory_bytes:
            raise PlatformProfileError(
                "this platform profile pins the TD HOB digest to "
                f"{format_memory_size(self.memory_bytes)} of memory (its TD HOB layout "
                f"is not known), so it cannot give {format_memory_size(memory_bytes)}: "
                "measure at that size, or capture the profile again with --firmware"
            )
        return self.sha384


@dataclass(frozen=True, slots=True)
class QemuLoader:
    """How the host's QEMU hands a ``-kernel`` to the firmware."""

    kernel_header: str = KERNEL_HEADER_PATCHED
    acpi_data_size: int = QEMU_ACPI_DATA_SIZE
    initrd_max: str = INITRD_MAX_ABOVE_4G_FLAG


@dataclass(frozen=True, slots=True)
class TemplateEvent:
    """One event of the reference boot and its role in a computed boot."""

    role: str
    event: Event


@dataclass(frozen=True, slots=True)
class PlatformProfile:
    """A captured host type; see the module docstring and docs/measurements.md."""

    name: str
    mrtd: bytes
    mrtd_source: str
    td_hob: TdHobModel
    qemu: QemuLoader
    events: tuple[TemplateEvent, ...]
    firmware_sha384: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        """The versioned JSON form. Raises nothing."""
        td_hob: dict[str, Any] = {
            "source": self.td_hob.source,
            "memory_bytes": self.td_hob.memory_bytes,
            "sha384": self.td_hob.sha384.hex(),
        }
        if self.td_hob.layout is not None:
            td_hob["hob_address"] = self.td_hob.layout.hob_address
            td_hob["accepted_ranges"] = [list(r) for r in self.td_hob.layout.accepted_ranges]
        return {
            "format": PROFILE_FORMAT,
            "version": PROFILE_VERSION,
            "name": self.name,
            "mrtd": self.mrtd.hex(),
            "mrtd_source": self.mrtd_source,
            "firmware_sha384": self.firmware_sha384.hex() if self.firmware_sha384 else None,
            "td_hob": td_hob,
            "qemu": {
                "machine": "q35",
                "kernel_header": self.qemu.kernel_header,
                "acpi_data_size": self.qemu.acpi_data_size,
                "initrd_max": self.qemu.initrd_max,
            },
            "events": [{"role": item.role, **event_to_json(item.event)} for item in self.events],
        }

    def digest(self) -> bytes:
        """SHA-384 of the canonical JSON form (sorted keys, no spaces). Raises nothing."""
        return hashlib.sha384(canonical_json(self.to_json())).digest()

    @classmethod
    def from_json(cls, value: Any) -> PlatformProfile:
        """Read the JSON form. Raises PlatformProfileError naming the bad field."""
        return _profile_from_json(value)


def canonical_json(value: Any) -> bytes:
    """The bytes a JSON document is hashed as: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# -- capture ------------------------------------------------------------------------------


def capture_platform(
    name: str,
    *,
    mrtd: bytes,
    rtmrs: Sequence[bytes],
    event_log: bytes,
    firmware: bytes | None = None,
    memory_bytes: int | None = None,
    qemu: QemuLoader | None = None,
) -> PlatformProfile:
    """A profile from a reference boot: its quote's MRTD and RTMRs and its event log.

    ``firmware`` (the TDVF flash image) makes MRTD and the TD HOB layout come from the
    firmware itself and be checked against the quote and the log. ``memory_bytes`` is the
    reference TD's memory size; without it the size is found from the TD HOB digest.
    Raises ReferenceMismatchError (the log does not replay to the quote, naming the
    register; the firmware does not match), UnsupportedBootError (not a QEMU direct
    boot), PlatformProfileError or FirmwareFormatError.
    """
    _check_name(name)
    events = _read_reference_log(event_log)
    _check_replay(events, rtmrs)
    _check_self_consistent(events)
    template = _template(events)
    td_hob_event = next(item.event for item in template if item.role == ROLE_TD_HOB)
    firmware_digest: bytes | None = None
    mrtd_source = MRTD_SOURCE_QUOTE
    layouts: list[tuple[str, TdHobLayout]] = [(TD_HOB_SOURCE_EDK2, EDK2_OVMF_LAYOUT)]
    if firmware is not None:
        sections = read_tdvf_sections(firmware)
        layouts = [(TD_HOB_SOURCE_FIRMWARE, td_hob_layout(sections))]
        mrtd_source = _firmware_mrtd_source(firmware, mrtd)
        firmware_digest = hashlib.sha384(firmware).digest()
    td_hob = _td_hob_model(td_hob_event, layouts, memory_bytes, strict=firmware is not None)
    return PlatformProfile(
        name=name,
        mrtd=mrtd,
        mrtd_source=mrtd_source,
        td_hob=td_hob,
        qemu=qemu or QemuLoader(),
        events=template,
        firmware_sha384=firmware_digest,
    )


def _check_name(name: str) -> None:
    if not name or len(name) > 128 or not name.isprintable():
        raise PlatformProfileError("a platform name is 1 to 128 printable characters")


def _read_reference_log(event_log: bytes) -> tuple[Event, ...]:
    try:
        return parse_event_log(event_log).events
    except EventLogError as exc:
        raise UnsupportedBootError(f"the reference event log is malformed: {exc}") from None


def _check_replay(events: Sequence[Event], rtmrs: Sequence[bytes]) -> None:
    replayed = replay(events)
    differ = [
        f"RTMR{n} (quote {quoted.hex()[:16]}..., log replays to {replayed[n].hex()[:16]}...)"
        for n, quoted in enumerate(rtmrs)
        if quoted != replayed[n]
    ]
    if differ:
        raise ReferenceMismatchError(
            "the event log does not replay to the quote's registers: "
            + "; ".join(differ)
            + ": give the event log of the boot that produced this quote"
        )


def _check_self_consistent(events: Sequence[Event]) -> None:
    for event in events:
        expected = derived_digest(event)
        if expected is not None and expected != event.sha384:
            raise ReferenceMismatchError(
                f"event {event.index} ({event.name}) has a digest that does not match "
                "its own data: the log is corrupt"
            )


def _template(events: Sequence[Event]) -> tuple[TemplateEvent, ...]:
    applications = [e for e in events if e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION]
    if len(applications) != 1 or not _is_qemu_kernel(applications[0]):
        names = ", ".join(image_file_name(e.data) or "?" for e in applications) or "none"
        raise UnsupportedBootError(
            "the reference boot is not a QEMU direct boot (-kernel): its boot applications "
            f"are {names}; capture a platform from a TD booted with -kernel/-initrd/-append"
        )
    template: list[TemplateEvent] = []
    hob_seen = False
    for event in events:
        if not event.extends or event.rtmr == 3:
            continue
        role = _role(event, hob_seen)
        hob_seen = hob_seen or role == ROLE_TD_HOB
        template.append(TemplateEvent(role, event))
    if not hob_seen:
        raise UnsupportedBootError("the reference log has no TD HOB event in RTMR0")
    if len(template) > MAX_TEMPLATE_EVENTS:
        raise PlatformProfileError(f"more than {MAX_TEMPLATE_EVENTS} reference events")
    return tuple(template)


def _role(event: Event, hob_seen: bool) -> str:
    if event.event_type == EV_EFI_BOOT_SERVICES_APPLICATION:
        return ROLE_KERNEL
    if event.event_type == EV_EVENT_TAG and linux_tag(event.data) is not None:
        return ROLE_LINUX_STUB
    if (
        event.rtmr == 0
        and event.event_type == EV_EFI_HANDOFF_TABLES2
        and not hob_seen
        and event.name == "TD HOB"
    ):
        return ROLE_TD_HOB
    if event.rtmr == 2:
        raise UnsupportedBootError(
            f"RTMR2 holds event {event.index} ({event.name}), which is neither the Linux "
            "EFI stub's command line nor its initrd: the reference boot is not a plain "
            "direct boot"
        )
    return ROLE_FIRMWARE


def _is_qemu_kernel(event: Event) -> bool:
    return (
        QEMU_KERNEL_LOADER_FS_MEDIA.bytes_le in event.data
        and image_file_name(event.data) == KERNEL_FILE_NAME
    )


def _firmware_mrtd_source(firmware: bytes, mrtd: bytes) -> str:
    for order in PAGE_ORDERS:
        if compute_mrtd(firmware, order) == mrtd:
            return f"firmware ({order})"
    raise ReferenceMismatchError(
        "the quote's MRTD is not the MRTD of this firmware in either page order "
        f"({', '.join(PAGE_ORDERS)}): the firmware file is not the one the host launched"
    )


def _td_hob_address(event: Event) -> int | None:
    """The guest address in a "TdxTable" EV_EFI_HANDOFF_TABLES2 event's data, if any."""
    data = event.data
    if not data:
        return None
    start = 1 + data[0]
    if len(data) < start + _TD_HOB_TABLE.size:
        return None
    count, _guid, address = _TD_HOB_TABLE.unpack_from(data, start)
    return int(address) if count == 1 else None


def _td_hob_model(
    event: Event,
    layouts: Sequence[tuple[str, TdHobLayout]],
    memory_bytes: int | None,
    *,
    strict: bool,
) -> TdHobModel:
    captured = event.sha384 or b""
    address = _td_hob_address(event)
    usable = [(s, lay) for s, lay in layouts if address is None or lay.hob_address == address]
    sizes = (
        [check_memory_size(memory_bytes)]
        if memory_bytes is not None
        else range(MEMORY_SEARCH_STEP, MEMORY_SEARCH_LIMIT + 1, MEMORY_SEARCH_STEP)
    )
    for source, layout in usable:
        for size in sizes:
            if td_hob_digest(layout, size) == captured:
                return TdHobModel(size, captured, source, layout)
    if strict:
        at = f" at {format_memory_size(memory_bytes)}" if memory_bytes else ""
        raise ReferenceMismatchError(
            f"the log's TD HOB is not the one QEMU builds from this firmware{at}: "
            "check the firmware file and --memory"
        )
    if memory_bytes is None:
        raise PlatformProfileError(
            "the log's TD HOB does not match the EDK II OVMF layout at any memory size "
            "tried: give --firmware FILE (the host's TDVF) or --memory SIZE (the "
            "reference TD's memory, to pin the TD HOB digest to that size)"
        )
    return TdHobModel(memory_bytes, captured, TD_HOB_SOURCE_PINNED, None)


# -- reading the JSON form ---------------------------------------------------------------


def _profile_from_json(value: Any) -> PlatformProfile:
    if not isinstance(value, dict):
        raise PlatformProfileError("a platform profile is a JSON object")
    if value.get("format") != PROFILE_FORMAT:
        raise PlatformProfileError(f'"format" must be "{PROFILE_FORMAT}"')
    version = value.get("version")
    if version != PROFILE_VERSION:
        raise PlatformProfileError(
            f"platform profile version {version!r} is not supported (this calculator reads "
            f"version {PROFILE_VERSION})"
        )
    name = _text(value, "name")
    _check_name(name)
    firmware = value.get("firmware_sha384")
    profile = PlatformProfile(
        name=name,
        mrtd=_hex48(value, "mrtd"),
        mrtd_source=_text(value, "mrtd_source"),
        td_hob=_td_hob_from_json(value.get("td_hob")),
        qemu=_qemu_from_json(value.get("qemu")),
        events=_events_from_json(value.get("events")),
        firmware_sha384=None if firmware is None else _hex48(value, "firmware_sha384"),
    )
    return profile


def _text(value: dict[str, Any], key: str) -> str:
    text = value.get(key)
    if not isinstance(text, str):
        raise PlatformProfileError(f'"{key}" must be a string')
    return text


def _integer(value: dict[str, Any], key: str, where: str) -> int:
    number = value.get(key)
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        raise PlatformProfileError(f'{where}"{key}" must be a non-negative integer')
    return number


def _hex48(value: dict[str, Any], key: str, where: str = "") -> bytes:
    text = value.get(key)
    if not isinstance(text, str) or len(text) != 96:
        raise PlatformProfileError(f'{where}"{key}" must be 96 hex characters')
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise PlatformProfileError(f'{where}"{key}" must be 96 hex characters') from None


def _td_hob_from_json(value: Any) -> TdHobModel:
    if not isinstance(value, dict):
        raise PlatformProfileError('"td_hob" must be an object')
    where = "td_hob."
    source = value.get("source")
    if source not in TD_HOB_SOURCES:
        raise PlatformProfileError(f'td_hob."source" must be one of {", ".join(TD_HOB_SOURCES)}')
    memory = _integer(value, "memory_bytes", where)
    try:
        check_memory_size(memory)
    except ValueError as exc:
        raise PlatformProfileError(f"td_hob.memory_bytes: {exc}") from None
    digest = _hex48(value, "sha384", where)
    if source == TD_HOB_SOURCE_PINNED:
        return TdHobModel(memory, digest, source, None)
    ranges = value.get("accepted_ranges")
    if not isinstance(ranges, list) or not all(
        isinstance(r, list) and len(r) == 2 and all(_is_u64(n) for n in r) for r in ranges
    ):
        raise PlatformProfileError('td_hob."accepted_ranges" must be [[start, length], ...]')
    layout = TdHobLayout(
        _integer(value, "hob_address", where), tuple((int(a), int(b)) for a, b in ranges)
    )
    if td_hob_digest(layout, memory) != digest:
        raise PlatformProfileError(
            "td_hob: the layout does not give the captured digest at the captured memory size"
        )
    return TdHobModel(memory, digest, source, layout)


def _is_u64(number: Any) -> bool:
    return isinstance(number, int) and not isinstance(number, bool) and 0 <= number < 2**64


def _qemu_from_json(value: Any) -> QemuLoader:
    if not isinstance(value, dict):
        raise PlatformProfileError('"qemu" must be an object')
    if value.get("machine", "q35") != "q35":
        raise PlatformProfileError('qemu."machine" must be "q35" (TDX guests are q35)')
    header = value.get("kernel_header")
    if header not in KERNEL_HEADER_MODES:
        raise PlatformProfileError(
            f'qemu."kernel_header" must be one of {", ".join(KERNEL_HEADER_MODES)}'
        )
    rule = value.get("initrd_max")
    if rule not in INITRD_MAX_RULES:
        raise PlatformProfileError(
            f'qemu."initrd_max" must be one of {", ".join(INITRD_MAX_RULES)}'
        )
    acpi = _integer(value, "acpi_data_size", "qemu.")
    if acpi >= 0x80000000:
        raise PlatformProfileError('qemu."acpi_data_size" is implausibly large')
    return QemuLoader(kernel_header=header, acpi_data_size=acpi, initrd_max=rule)


def _events_from_json(value: Any) -> tuple[TemplateEvent, ...]:
    if not isinstance(value, list) or not 0 < len(value) <= MAX_TEMPLATE_EVENTS:
        raise PlatformProfileError(f'"events" must be a list of 1 to {MAX_TEMPLATE_EVENTS} events')
    template: list[TemplateEvent] = []
    for index, item in enumerate(value):
        role = item.get("role") if isinstance(item, dict) else None
        if role not in ROLES:
            raise PlatformProfileError(f'event {index}: "role" must be one of {", ".join(ROLES)}')
        try:
            event = event_from_json(item, index)
        except ValueError as exc:
            raise PlatformProfileError(str(exc)) from None
        if event.event_type == EV_NO_ACTION or event.rtmr is None or event.rtmr == 3:
            raise PlatformProfileError(f"event {index}: only events extending RTMR0-2 belong here")
        template.append(TemplateEvent(role, event))
    roles = [item.role for item in template]
    if roles.count(ROLE_TD_HOB) != 1 or roles.count(ROLE_KERNEL) != 1:
        raise PlatformProfileError('"events" must hold one td_hob and one kernel event')
    return tuple(template)


def stub_slot(template: Sequence[TemplateEvent]) -> int:
    """Where the Linux EFI stub's events go in a computed boot: the reference's first
    stub event, else just before "Exit Boot Services Invocation", else the end.
    Raises nothing."""
    for position, item in enumerate(template):
        if item.role == ROLE_LINUX_STUB:
            return position
    for position, item in enumerate(template):
        if item.event.event_type == EV_EFI_ACTION and item.event.data == ACTION_EXIT_BOOT_SERVICES:
            return position
    return len(template)
