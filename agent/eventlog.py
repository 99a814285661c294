"""The TDX firmware event log (CCEL): parse, replay to RTMR0-3, name events, write. No I/O.

The log is the TCG PC Client "crypto-agile" firmware event log as TDX firmware (TDVF)
writes it and Linux exposes it at ``/sys/firmware/acpi/tables/data/CCEL``:

* a first record in the old SHA-1 layout (MR index u32, event type u32, 20-byte digest,
  event size u32, event data) whose data is the "Spec ID Event03" structure naming the
  digest algorithms and their sizes;
* then records of MR index u32, event type u32, digest count u32, (algorithm u16,
  digest) pairs, event size u32, event data;
* then padding (0xFF or 0x00 to the end of the log area).

MR index 1..4 are RTMR0..3. Replay starts every register at 48 zero bytes and, for each
event other than EV_NO_ACTION, sets ``RTMR = SHA-384(RTMR || event's SHA-384 digest)``.

Every malformed input raises EventLogError, which names the byte offset; a size limit
(MAX_LOG_BYTES) and an event-count limit (MAX_EVENTS) bound memory and time. Naming an
event (``Event.name``) never raises, whatever its data holds.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from tdx_boot_attest.agent.protocol import ProtocolError, Reason

if TYPE_CHECKING:
    import uuid

# A CCEL log area is 64 KiB to 256 KiB on the firmware seen in the field; 1 MiB leaves room
# for verbose boot chains while bounding what a server parses per request.
MAX_LOG_BYTES: Final = 1024 * 1024
MAX_EVENTS: Final = 8192
RTMR_COUNT: Final = 4
RTMR_BYTES: Final = 48

ALG_SHA1: Final = 0x0004
ALG_SHA256: Final = 0x000B
ALG_SHA384: Final = 0x000C
ALG_SHA512: Final = 0x000D
ALG_SM3_256: Final = 0x0012
_ALGORITHM_SIZES: Final = {
    ALG_SHA1: 20,
    ALG_SHA256: 32,
    ALG_SHA384: 48,
    ALG_SHA512: 64,
    ALG_SM3_256: 32,
}
ALGORITHM_NAMES: Final = {
    ALG_SHA1: "sha1",
    ALG_SHA256: "sha256",
    ALG_SHA384: "sha384",
    ALG_SHA512: "sha512",
    ALG_SM3_256: "sm3_256",
}
SPEC_ID_SIGNATURE: Final = b"Spec ID Event03\x00"

EV_PREBOOT_CERT: Final = 0x0
EV_POST_CODE: Final = 0x1
EV_NO_ACTION: Final = 0x3
EV_SEPARATOR: Final = 0x4
EV_ACTION: Final = 0x5
EV_EVENT_TAG: Final = 0x6
EV_S_CRTM_CONTENTS: Final = 0x7
EV_S_CRTM_VERSION: Final = 0x8
EV_CPU_MICROCODE: Final = 0x9
EV_PLATFORM_CONFIG_FLAGS: Final = 0xA
EV_TABLE_OF_DEVICES: Final = 0xB
EV_COMPACT_HASH: Final = 0xC
EV_IPL: Final = 0xD
EV_IPL_PARTITION_DATA: Final = 0xE
EV_NONHOST_CODE: Final = 0xF
EV_NONHOST_CONFIG: Final = 0x10
EV_NONHOST_INFO: Final = 0x11
EV_OMIT_BOOT_DEVICE_EVENTS: Final = 0x12
EV_EFI_VARIABLE_DRIVER_CONFIG: Final = 0x80000001
EV_EFI_VARIABLE_BOOT: Final = 0x80000002
EV_EFI_BOOT_SERVICES_APPLICATION: Final = 0x80000003
EV_EFI_BOOT_SERVICES_DRIVER: Final = 0x80000004
EV_EFI_RUNTIME_SERVICES_DRIVER: Final = 0x80000005
EV_EFI_GPT_EVENT: Final = 0x80000006
EV_EFI_ACTION: Final = 0x80000007
EV_EFI_PLATFORM_FIRMWARE_BLOB: Final = 0x80000008
EV_EFI_HANDOFF_TABLES: Final = 0x80000009
EV_EFI_PLATFORM_FIRMWARE_BLOB2: Final = 0x8000000A
EV_EFI_HANDOFF_TABLES2: Final = 0x8000000B
EV_EFI_VARIABLE_BOOT2: Final = 0x8000000C
EV_EFI_HCRTM_EVENT: Final = 0x80000010
EV_EFI_VARIABLE_AUTHORITY: Final = 0x800000E0
EV_EFI_SPDM_FIRMWARE_BLOB: Final = 0x800000E1
EV_EFI_SPDM_FIRMWARE_CONFIG: Final = 0x800000E2

EVENT_TYPE_NAMES: Final = {
    EV_PREBOOT_CERT: "EV_PREBOOT_CERT",
    EV_POST_CODE: "EV_POST_CODE",
    0x2: "EV_UNUSED",
    EV_NO_ACTION: "EV_NO_ACTION",
    EV_SEPARATOR: "EV_SEPARATOR",
    EV_ACTION: "EV_ACTION",
    EV_EVENT_TAG: "EV_EVENT_TAG",
    EV_S_CRTM_CONTENTS: "EV_S_CRTM_CONTENTS",
    EV_S_CRTM_VERSION: "EV_S_CRTM_VERSION",
    EV_CPU_MICROCODE: "EV_CPU_MICROCODE",
    EV_PLATFORM_CONFIG_FLAGS: "EV_PLATFORM_CONFIG_FLAGS",
    EV_TABLE_OF_DEVICES: "EV_TABLE_OF_DEVICES",
    EV_COMPACT_HASH: "EV_COMPACT_HASH",
    EV_IPL: "EV_IPL",
    EV_IPL_PARTITION_DATA: "EV_IPL_PARTITION_DATA",
    EV_NONHOST_CODE: "EV_NONHOST_CODE",
    EV_NONHOST_CONFIG: "EV_NONHOST_CONFIG",
    EV_NONHOST_INFO: "EV_NONHOST_INFO",
    EV_OMIT_BOOT_DEVICE_EVENTS: "EV_OMIT_BOOT_DEVICE_EVENTS",
    EV_EFI_VARIABLE_DRIVER_CONFIG: "EV_EFI_VARIABLE_DRIVER_CONFIG",
    EV_EFI_VARIABLE_BOOT: "EV_EFI_VARIABLE_BOOT",
    EV_EFI_BOOT_SERVICES_APPLICATION: "EV_EFI_BOOT_SERVICES_APPLICATION",
    EV_EFI_BOOT_SERVICES_DRIVER: "EV_EFI_BOOT_SERVICES_DRIVER",
    EV_EFI_RUNTIME_SERVICES_DRIVER: "EV_EFI_RUNTIME_SERVICES_DRIVER",
    EV_EFI_GPT_EVENT: "EV_EFI_GPT_EVENT",
    EV_EFI_ACTION: "EV_EFI_ACTION",
    EV_EFI_PLATFORM_FIRMWARE_BLOB: "EV_EFI_PLATFORM_FIRMWARE_BLOB",
    EV_EFI_HANDOFF_TABLES: "EV_EFI_HANDOFF_TABLES",
    EV_EFI_PLATFORM_FIRMWARE_BLOB2: "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
    EV_EFI_HANDOFF_TABLES2: "EV_EFI_HANDOFF_TABLES2",
    EV_EFI_VARIABLE_BOOT2: "EV_EFI_VARIABLE_BOOT2",
    EV_EFI_HCRTM_EVENT: "EV_EFI_HCRTM_EVENT",
    EV_EFI_VARIABLE_AUTHORITY: "EV_EFI_VARIABLE_AUTHORITY",
    EV_EFI_SPDM_FIRMWARE_BLOB: "EV_EFI_SPDM_FIRMWARE_BLOB",
    EV_EFI_SPDM_FIRMWARE_CONFIG: "EV_EFI_SPDM_FIRMWARE_CONFIG",
}

# The Linux EFI stub's tagged events (TCG_PCClientTaggedEvent) in RTMR2 / PCR9.
LINUX_TAG_INITRD: Final = 0x8F3B22EC
LINUX_TAG_LOAD_OPTIONS: Final = 0x8F3B22ED
LINUX_TAG_DESCRIPTIONS: Final = {
    LINUX_TAG_INITRD: "Linux initrd",
    LINUX_TAG_LOAD_OPTIONS: "LOADED_IMAGE::LoadOptions",
}

_SHA1_HEADER: Final = struct.Struct("<II20sI")
_EVENT2_HEADER: Final = struct.Struct("<III")
_U16: Final = struct.Struct("<H")
_U32: Final = struct.Struct("<I")
_SPEC_ID_FIXED: Final = struct.Struct("<16sIBBBBI")
# A digest list longer than the algorithms the Spec ID event declares cannot be valid.
_MAX_ALGORITHMS: Final = 16
_PADDING_BYTES: Final = (0x00, 0xFF)


class EventLogError(ProtocolError):
    """The bytes are not a well-formed event log; ``offset`` is where parsing stopped."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(Reason.EVENT_LOG_INVALID, f"event log invalid at byte {offset}: {message}")
        self.offset = offset


class Event:
    """One record of the log, as read (or as a calculator expects it to be written).

    ``index`` is its position after the Spec ID header (0 = first event), ``offset`` its
    byte offset in the log (-1 for an event that was computed, not read), ``mr_index``
    the log's register number (1..4 = RTMR0..3), ``digests`` (algorithm id, digest)
    pairs, ``data`` the event data. ``detail`` is what a calculator knows about the
    measured input and the log does not hold (the command line's text, a file name);
    it is empty for events read from a log. Equality and hashing ignore ``offset`` and
    ``detail``. (A plain slotted class rather than a dataclass: the agent imports this
    module at every boot, and the dataclass machinery costs it tens of milliseconds.)
    """

    __slots__ = ("data", "detail", "digests", "event_type", "index", "mr_index", "offset")

    def __init__(
        self,
        index: int,
        mr_index: int,
        event_type: int,
        digests: tuple[tuple[int, bytes], ...],
        data: bytes,
        *,
        offset: int = -1,
        detail: str = "",
    ) -> None:
        self.index = index
        self.mr_index = mr_index
        self.event_type = event_type
        self.digests = digests
        self.data = data
        self.offset = offset
        self.detail = detail

    def _key(self) -> tuple[int, int, int, tuple[tuple[int, bytes], ...], bytes]:
        return (self.index, self.mr_index, self.event_type, self.digests, self.data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        digest = self.sha384
        return (
            f"Event(index={self.index}, mr_index={self.mr_index}, type={self.type_name}, "
            f"sha384={digest.hex() if digest else None}, data={len(self.data)} bytes)"
        )

    @property
    def sha384(self) -> bytes | None:
        """The SHA-384 digest, or None when the record has none. Raises nothing."""
        for algorithm, digest in self.digests:
            if algorithm == ALG_SHA384:
                return digest
        return None

    @property
    def rtmr(self) -> int | None:
        """The RTMR (0..3) this event extends, None for other MR indexes. Raises nothing."""
        return self.mr_index - 1 if 1 <= self.mr_index <= RTMR_COUNT else None

    @property
    def extends(self) -> bool:
        """True when replay extends a register with this event. Raises nothing."""
        return self.event_type != EV_NO_ACTION and self.rtmr is not None

    @property
    def type_name(self) -> str:
        """The TCG name of the event type (``EV_...``, or hex when unknown). Raises nothing."""
        return EVENT_TYPE_NAMES.get(self.event_type, f"EV_UNKNOWN_{self.event_type:#010x}")

    @property
    def name(self) -> str:
        """A name a person can read (``EFI variable "SecureBoot"``, ...). Raises nothing."""
        return describe(self)


class EventLog(NamedTuple):
    """A parsed log: the algorithms of its Spec ID event, its events, its length in bytes."""

    algorithms: tuple[tuple[int, int], ...]
    events: tuple[Event, ...]
    length: int
    header_mr_index: int = 0
    vendor_info: bytes = b""

    def replay(self) -> tuple[bytes, bytes, bytes, bytes]:
        """RTMR0..3 as the log's SHA-384 bank gives them. Raises nothing (see parse)."""
        return replay(self.events)

    def covered(self) -> frozenset[int]:
        """The RTMRs (0..3) that at least one event extends. Raises nothing."""
        return covered_registers(self.events)


def parse_event_log(
    data: bytes, *, max_bytes: int = MAX_LOG_BYTES, max_events: int = MAX_EVENTS
) -> EventLog:
    """Parse a CCEL log (padding after the last record is allowed and ignored).

    Raises EventLogError naming the offset for anything malformed: over ``max_bytes``,
    truncated, sizes past the end, a digest count larger than the algorithm list,
    algorithms the Spec ID event does not declare, no SHA-384 bank, a record without a
    SHA-384 digest, or more than ``max_events`` events.
    """
    if len(data) > max_bytes:
        raise EventLogError(0, f"log is {len(data)} bytes, more than the {max_bytes} allowed")
    view = memoryview(data)
    header_mr, algorithms, vendor_info, offset = _read_spec_id_record(view)
    sizes = dict(algorithms)
    events: list[Event] = []
    while offset < len(view) and not _only_padding(view, offset):
        if len(events) >= max_events:
            raise EventLogError(offset, f"more than {max_events} events")
        event, offset = _read_event(view, offset, sizes, len(events))
        events.append(event)
    return EventLog(
        algorithms=algorithms,
        events=tuple(events),
        length=offset,
        header_mr_index=header_mr,
        vendor_info=vendor_info,
    )


def _need(view: memoryview, offset: int, size: int, what: str) -> None:
    if size < 0 or offset + size > len(view):
        raise EventLogError(
            offset, f"{what} needs {size} bytes but only {max(0, len(view) - offset)} remain"
        )


def _only_padding(view: memoryview, offset: int) -> bool:
    first = view[offset]
    if first not in _PADDING_BYTES:
        return False
    rest = view[offset:]
    return rest.tobytes().count(first) == len(rest)


def _read_spec_id_record(
    view: memoryview,
) -> tuple[int, tuple[tuple[int, int], ...], bytes, int]:
    _need(view, 0, _SHA1_HEADER.size, "the first (Spec ID) record header")
    mr_index, event_type, _digest, size = _SHA1_HEADER.unpack_from(view, 0)
    start = _SHA1_HEADER.size
    if event_type != EV_NO_ACTION:
        raise EventLogError(4, f"first record has type {event_type:#x}, not EV_NO_ACTION")
    _need(view, start, size, "the Spec ID event data")
    _need(view, start, _SPEC_ID_FIXED.size, "the Spec ID event structure")
    signature, _class, _minor, _major, _errata, _uintn, count = _SPEC_ID_FIXED.unpack_from(
        view, start
    )
    if signature != SPEC_ID_SIGNATURE:
        raise EventLogError(start, 'first record is not a "Spec ID Event03" (not crypto-agile)')
    if not 1 <= count <= _MAX_ALGORITHMS:
        raise EventLogError(start + 24, f"Spec ID event declares {count} algorithms")
    cursor = start + _SPEC_ID_FIXED.size
    _need(view, cursor, 4 * count + 1, "the Spec ID algorithm list")
    algorithms: list[tuple[int, int]] = []
    for _ in range(count):
        algorithm, digest_size = struct.unpack_from("<HH", view, cursor)
        known = _ALGORITHM_SIZES.get(algorithm)
        if known is not None and known != digest_size:
            raise EventLogError(
                cursor,
                f"algorithm {algorithm:#06x} declared with {digest_size}-byte digests"
                f" (it has {known})",
            )
        if digest_size == 0 or digest_size > 64:
            raise EventLogError(cursor, f"digest size {digest_size} is not plausible")
        if any(algorithm == seen for seen, _ in algorithms):
            raise EventLogError(cursor, f"algorithm {algorithm:#06x} declared twice")
        algorithms.append((algorithm, digest_size))
        cursor += 4
    vendor_size = view[cursor]
    cursor += 1
    _need(view, cursor, vendor_size, "the Spec ID vendor information")
    vendor_info = view[cursor : cursor + vendor_size].tobytes()
    cursor += vendor_size
    if cursor > start + size:
        raise EventLogError(start, "Spec ID structure is longer than its record says")
    if not any(algorithm == ALG_SHA384 for algorithm, _ in algorithms):
        raise EventLogError(start, "the log has no SHA-384 bank (TDX RTMRs are SHA-384)")
    return mr_index, tuple(algorithms), vendor_info, start + size


def _read_event(
    view: memoryview, offset: int, sizes: dict[int, int], index: int
) -> tuple[Event, int]:
    _need(view, offset, _EVENT2_HEADER.size, f"event {index} header")
    mr_index, event_type, count = _EVENT2_HEADER.unpack_from(view, offset)
    cursor = offset + _EVENT2_HEADER.size
    if count > len(sizes):
        raise EventLogError(
            offset + 8, f"event {index} has {count} digests, the log declares {len(sizes)}"
        )
    digests: list[tuple[int, bytes]] = []
    for _ in range(count):
        _need(view, cursor, _U16.size, f"event {index} digest algorithm")
        (algorithm,) = _U16.unpack_from(view, cursor)
        size = sizes.get(algorithm)
        if size is None:
            raise EventLogError(
                cursor, f"event {index} uses algorithm {algorithm:#06x}, not declared by the log"
            )
        cursor += _U16.size
        _need(view, cursor, size, f"event {index} digest")
        digests.append((algorithm, view[cursor : cursor + size].tobytes()))
        cursor += size
    _need(view, cursor, _U32.size, f"event {index} data size")
    (data_size,) = _U32.unpack_from(view, cursor)
    cursor += _U32.size
    _need(view, cursor, data_size, f"event {index} data")
    data = view[cursor : cursor + data_size].tobytes()
    event = Event(
        index=index,
        mr_index=mr_index,
        event_type=event_type,
        digests=tuple(digests),
        data=data,
        offset=offset,
    )
    if event.extends and event.sha384 is None:
        raise EventLogError(offset, f"event {index} ({event.type_name}) has no SHA-384 digest")
    return event, cursor + data_size


def extend(register: bytes, digest: bytes) -> bytes:
    """SHA-384(register || digest), the TDX RTMR extend. Raises ValueError for bad sizes."""
    if len(register) != RTMR_BYTES or len(digest) != RTMR_BYTES:
        raise ValueError("RTMR values and extended digests are 48 bytes (SHA-384)")
    return hashlib.sha384(register + digest).digest()


def replay(events: Iterable[Event]) -> tuple[bytes, bytes, bytes, bytes]:
    """RTMR0..3 after extending every extending event from zero. Raises ValueError.

    (Events from parse_event_log always carry a 48-byte SHA-384 digest.)
    """
    registers = [bytes(RTMR_BYTES)] * RTMR_COUNT
    for event in events:
        rtmr = event.rtmr
        if rtmr is None or not event.extends:
            continue
        digest = event.sha384
        if digest is None:
            raise ValueError(f"event {event.index} has no SHA-384 digest")
        registers[rtmr] = extend(registers[rtmr], digest)
    return (registers[0], registers[1], registers[2], registers[3])


def covered_registers(events: Iterable[Event]) -> frozenset[int]:
    """The RTMRs (0..3) that at least one event extends. Raises nothing."""
    return frozenset(e.rtmr for e in events if e.extends and e.rtmr is not None)


# -- writing ---------------------------------------------------------------------------


def computed_event(
    mr_index: int,
    event_type: int,
    data: bytes,
    digest: bytes | None = None,
    *,
    index: int = 0,
    detail: str = "",
) -> Event:
    """An event with a SHA-384 digest (``digest`` or SHA-384 of ``data``). Raises ValueError."""
    value = hashlib.sha384(data).digest() if digest is None else digest
    if len(value) != RTMR_BYTES:
        raise ValueError("a SHA-384 digest is 48 bytes")
    return Event(
        index=index,
        mr_index=mr_index,
        event_type=event_type,
        digests=((ALG_SHA384, value),),
        data=data,
        detail=detail,
    )


def event_to_json(event: Event) -> dict[str, Any]:
    """The JSON form of an event used in manifests, image records and API bodies.

    ``{"index", "rtmr", "mr_index", "type", "type_name", "name", "sha384", "data"[, "detail"]}``
    with ``sha384`` and ``data`` as lowercase hex. Raises ValueError for an event without
    a SHA-384 digest.
    """
    digest = event.sha384
    if digest is None:
        raise ValueError(f"event {event.index} has no SHA-384 digest")
    out: dict[str, Any] = {
        "index": event.index,
        "rtmr": event.rtmr,
        "mr_index": event.mr_index,
        "type": event.event_type,
        "type_name": event.type_name,
        "name": event.name,
        "sha384": digest.hex(),
        "data": event.data.hex(),
    }
    if event.detail:
        out["detail"] = event.detail
    return out


def event_from_json(value: Any, index: int) -> Event:
    """Read the JSON form of event_to_json as event ``index``.

    ``index``, ``rtmr``, ``name`` and ``type_name`` there are ignored (they follow from
    the rest).

    Raises ValueError naming the event and the field when a field is missing or invalid.
    """
    if not isinstance(value, dict):
        raise ValueError(f"event {index}: expected a JSON object")
    mr_index = _json_u32(value, "mr_index", index)
    event_type = _json_u32(value, "type", index)
    try:
        digest = bytes.fromhex(str(value["sha384"]))
        data = bytes.fromhex(str(value.get("data", "")))
    except (KeyError, ValueError):
        raise ValueError(f"event {index}: sha384 and data must be hex") from None
    if len(digest) != RTMR_BYTES:
        raise ValueError(f"event {index}: sha384 must be 48 bytes")
    detail = value.get("detail", "")
    if not isinstance(detail, str):
        raise ValueError(f"event {index}: detail must be a string")
    return computed_event(mr_index, event_type, data, digest, index=index, detail=detail)


def _json_u32(value: dict[str, Any], key: str, index: int) -> int:
    number = value.get(key)
    if not isinstance(number, int) or isinstance(number, bool) or not 0 <= number < 2**32:
        raise ValueError(f"event {index}: {key} must be an integer 0..2^32-1")
    return number


def encode_event_log(events: Sequence[Event], *, pad_to: int = 0, pad_byte: int = 0xFF) -> bytes:
    """A CCEL log (Spec ID header with the SHA-384 bank only, then ``events``).

    Only each event's SHA-384 digest is written. ``pad_to`` pads the result with
    ``pad_byte`` as a firmware log area is padded. Raises ValueError for an event without
    a SHA-384 digest or a log longer than ``pad_to`` (when given).
    """
    spec = _SPEC_ID_FIXED.pack(SPEC_ID_SIGNATURE, 0, 0, 2, 0, 2, 1)
    spec += struct.pack("<HH", ALG_SHA384, RTMR_BYTES) + b"\x00"
    out = bytearray(_SHA1_HEADER.pack(1, EV_NO_ACTION, bytes(20), len(spec)) + spec)
    for event in events:
        digest = event.sha384
        if digest is None:
            raise ValueError(f"event {event.index} has no SHA-384 digest")
        out += _EVENT2_HEADER.pack(event.mr_index, event.event_type, 1)
        out += _U16.pack(ALG_SHA384) + digest + _U32.pack(len(event.data)) + event.data
    if pad_to:
        if len(out) > pad_to:
            raise ValueError(f"log of {len(out)} bytes does not fit in {pad_to}")
        out += bytes([pad_byte]) * (pad_to - len(out))
    return bytes(out)


# -- names a person can read -------------------------------------------------------------


def describe(event: Event) -> str:
    """A readable name for ``event`` from its type and data. Raises nothing."""
    try:
        name = _describe(event)
    except (ValueError, IndexError, struct.error, UnicodeDecodeError):
        name = None
    return name if name else event.type_name


def _describe(event: Event) -> str | None:
    kind, data = event.event_type, event.data
    if kind == EV_SEPARATOR:
        return "separator" if data in (b"\x00" * 4, b"") else "separator (error)"
    if kind == EV_EFI_HANDOFF_TABLES2:
        text = _short_description(data)
        return "TD HOB" if text == "TdxTable" else f"handoff tables {text!r}"
    if kind == EV_EFI_HANDOFF_TABLES:
        return "handoff tables"
    if kind in (EV_EFI_PLATFORM_FIRMWARE_BLOB2, EV_EFI_PLATFORM_FIRMWARE_BLOB):
        text = _short_description(data) if kind == EV_EFI_PLATFORM_FIRMWARE_BLOB2 else ""
        if text.startswith("Fv("):
            return f"configuration firmware volume {text}"
        return f"firmware blob {text}".rstrip()
    if kind in (
        EV_EFI_VARIABLE_DRIVER_CONFIG,
        EV_EFI_VARIABLE_BOOT,
        EV_EFI_VARIABLE_BOOT2,
        EV_EFI_VARIABLE_AUTHORITY,
    ):
        variable = parse_variable(data)
        if variable is None:
            return None
        if kind in (EV_EFI_VARIABLE_BOOT, EV_EFI_VARIABLE_BOOT2):
            return variable.name
        prefix = "EFI authority" if kind == EV_EFI_VARIABLE_AUTHORITY else "EFI variable"
        return f'{prefix} "{variable.name}"'
    if kind in (
        EV_EFI_BOOT_SERVICES_APPLICATION,
        EV_EFI_BOOT_SERVICES_DRIVER,
        EV_EFI_RUNTIME_SERVICES_DRIVER,
    ):
        what = {
            EV_EFI_BOOT_SERVICES_APPLICATION: "boot application",
            EV_EFI_BOOT_SERVICES_DRIVER: "boot driver",
            EV_EFI_RUNTIME_SERVICES_DRIVER: "runtime driver",
        }[kind]
        path = image_file_name(data)
        return f"{what} {path}" if path else what
    if kind == EV_EFI_GPT_EVENT:
        return "GPT"
    if kind in (EV_EFI_ACTION, EV_ACTION, EV_PLATFORM_CONFIG_FLAGS, EV_S_CRTM_VERSION):
        text = _printable(data)
        if kind == EV_PLATFORM_CONFIG_FLAGS:
            return f'"{text}"'
        return f'EFI action "{text}"' if kind == EV_EFI_ACTION else f'action "{text}"'
    if kind == EV_EVENT_TAG:
        tag = linux_tag(data)
        if tag is not None:
            return f'"{tag}"'
        return f'tag "{_printable(data)}"'
    if kind == EV_IPL:
        text = _printable(data)
        if text.startswith("ima"):
            return f'IMA "{text}"'
        return f'IPL "{text}"'
    if kind == EV_NO_ACTION:
        return f'no action "{_printable(data[:32])}"'
    return None


_SECURE_BOOT_VARIABLES: Final = frozenset({"SecureBoot", "PK", "KEK", "db", "dbx", "dbt", "dbr"})


def component(event: Event) -> str | None:
    """The part of the VM an event measures, in an operator's words, when it says more
    than the event's name: ``kernel``, ``initrd``, ``kernel command line``, ``ACPI tables``,
    ``TD memory (TD HOB)``, ... None for structural events (separators, EFI actions).
    Raises nothing.
    """
    kind = event.event_type
    if kind == EV_EVENT_TAG:
        tag = linux_tag(event.data)
        if tag == LINUX_TAG_DESCRIPTIONS[LINUX_TAG_LOAD_OPTIONS]:
            return "kernel command line"
        return "initrd" if tag is not None else None
    if kind == EV_EFI_BOOT_SERVICES_APPLICATION:
        return "kernel" if image_file_name(event.data) == "kernel" else "boot loader or kernel"
    if kind == EV_EFI_HANDOFF_TABLES2:
        return "TD memory (TD HOB)"
    if kind in (EV_EFI_PLATFORM_FIRMWARE_BLOB2, EV_EFI_PLATFORM_FIRMWARE_BLOB):
        return "firmware configuration"
    if kind == EV_PLATFORM_CONFIG_FLAGS and event.data.startswith(b"ACPI DATA"):
        return "ACPI tables (VM shape and host QEMU)"
    if kind in (EV_EFI_VARIABLE_BOOT, EV_EFI_VARIABLE_BOOT2):
        return "boot options"
    if kind == EV_EFI_VARIABLE_DRIVER_CONFIG:
        variable = parse_variable(event.data)
        if variable is not None and variable.name in _SECURE_BOOT_VARIABLES:
            return "Secure Boot configuration"
        return None
    if kind == EV_EFI_GPT_EVENT:
        return "partition table"
    return None


def _printable(data: bytes, limit: int = 120) -> str:
    text = data.split(b"\x00", 1)[0].decode("utf-8", errors="replace")
    flat = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _short_description(data: bytes) -> str:
    """The description of a *_BLOB2 / HANDOFF_TABLES2 event (a u8 length, then text)."""
    if not data:
        return ""
    size = data[0]
    return _printable(data[1 : 1 + size])


class Variable(NamedTuple):
    """The UEFI_VARIABLE_DATA of a variable event."""

    vendor_guid: uuid.UUID
    name: str
    data: bytes


_VARIABLE_FIXED: Final = struct.Struct("<16sQQ")


def parse_variable(data: bytes) -> Variable | None:
    """Decode UEFI_VARIABLE_DATA (GUID, lengths, UTF-16LE name, data); None if malformed."""
    if len(data) < _VARIABLE_FIXED.size:
        return None
    guid, name_chars, data_size = _VARIABLE_FIXED.unpack_from(data, 0)
    name_end = _VARIABLE_FIXED.size + 2 * name_chars
    if name_chars > len(data) or name_end + data_size > len(data):
        return None
    import uuid

    name = data[_VARIABLE_FIXED.size : name_end].decode("utf-16-le", errors="replace")
    return Variable(uuid.UUID(bytes_le=guid), name, data[name_end : name_end + data_size])


def variable_event_data(vendor_guid: uuid.UUID, name: str, value: bytes) -> bytes:
    """UEFI_VARIABLE_DATA for a variable event (the inverse of parse_variable). Raises nothing."""
    encoded = name.encode("utf-16-le")
    return _VARIABLE_FIXED.pack(vendor_guid.bytes_le, len(name), len(value)) + encoded + value


_IMAGE_LOAD_FIXED: Final = struct.Struct("<QQQQ")
_DEVICE_PATH_MEDIA: Final = 4
_DEVICE_PATH_FILE: Final = 4
_DEVICE_PATH_END: Final = 0x7F


def image_file_name(data: bytes) -> str | None:
    """The last file-path node of an UEFI_IMAGE_LOAD_EVENT's device path, if any.

    Returns None when the data is malformed or holds no file path. Raises nothing.
    """
    if len(data) < _IMAGE_LOAD_FIXED.size:
        return None
    *_, path_size = _IMAGE_LOAD_FIXED.unpack_from(data, 0)
    path = data[_IMAGE_LOAD_FIXED.size : _IMAGE_LOAD_FIXED.size + path_size]
    found: str | None = None
    cursor = 0
    while cursor + 4 <= len(path):
        node_type, subtype, length = struct.unpack_from("<BBH", path, cursor)
        if length < 4 or node_type == _DEVICE_PATH_END:
            break
        if node_type == _DEVICE_PATH_MEDIA and subtype == _DEVICE_PATH_FILE:
            text = path[cursor + 4 : cursor + length].decode("utf-16-le", errors="replace")
            found = _printable(text.split("\x00", 1)[0].encode())
        cursor += length
    return found


def linux_tag(data: bytes) -> str | None:
    """The description of a Linux EFI stub tagged event, in either format it has used.

    Newer kernels write TCG_PCClientTaggedEvent (tag id u32, size u32, description);
    older ones the description alone. Returns None for any other data. Raises nothing.
    """
    if len(data) >= 8:
        tag, size = struct.unpack_from("<II", data, 0)
        if tag in LINUX_TAG_DESCRIPTIONS and 8 + size <= len(data):
            return LINUX_TAG_DESCRIPTIONS[tag]
    text = data.split(b"\x00", 1)[0]
    for description in LINUX_TAG_DESCRIPTIONS.values():
        if text == description.encode():
            return description
    return None
