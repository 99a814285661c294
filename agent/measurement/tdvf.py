"""TDVF (TDX firmware) metadata, and MRTD computed from the firmware file.

QEMU finds the metadata through OVMF's GUIDed table at the end of the flash image: the
last 32 bytes are preceded by the table footer GUID and the table's u16 length; each
entry, read backwards, is (data, u16 length, GUID). The entry with the TDX metadata
offset GUID holds a u32: the descriptor lies that many bytes before the end of the file.
The descriptor is "TDVF", u32 length, u32 version (1), u32 section count, then 32-byte
sections: u32 data offset, u32 raw size, u64 guest address, u64 memory size, u32 type
(0 BFV, 1 CFV, 2 TD_HOB, 3 TEMP_MEM, 4 PERM_MEM, 5 PAYLOAD, 6 PAYLOAD_PARAM), u32
attributes (bit 0 MR.EXTEND, bit 1 PAGE.AUG).

MRTD is what the TDX module computes while the VMM adds the firmware: for every page
of every section not marked PAGE.AUG, a TDH.MEM.PAGE.ADD record (128 bytes:
"MEM.PAGE.ADD", zero padding, the page's u64 guest address at byte 16), and for
sections marked MR.EXTEND, per 256-byte chunk a TDH.MR.EXTEND record ("MR.EXTEND",
the chunk's guest address at byte 16) followed by the chunk. KVM has added each
section's pages either page by page (add, then extend, for each page:
:data:`PAGE_ORDER_PER_PAGE`) or all adds of a section before all its extends
(:data:`PAGE_ORDER_PER_SECTION`, earlier TDX host kernels). This is computed from the
firmware file alone; a platform profile records which order matched the host's quote.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import dataclass
from typing import Final, Protocol

from tdx_boot_attest.agent.measurement.errors import FirmwareFormatError
from tdx_boot_attest.agent.measurement.td_hob import TdHobLayout

TABLE_FOOTER_GUID: Final = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d")
TDX_METADATA_OFFSET_GUID: Final = uuid.UUID("e47a6535-984a-4798-865e-4685a7bf8ec2")
TDVF_SIGNATURE: Final = b"TDVF"
TDVF_VERSION: Final = 1
SECTION_BFV: Final = 0
SECTION_CFV: Final = 1
SECTION_TD_HOB: Final = 2
SECTION_TEMP_MEM: Final = 3
SECTION_PERM_MEM: Final = 4
SECTION_PAYLOAD: Final = 5
SECTION_PAYLOAD_PARAM: Final = 6
SECTION_TYPE_NAMES: Final = {
    SECTION_BFV: "BFV",
    SECTION_CFV: "CFV",
    SECTION_TD_HOB: "TD_HOB",
    SECTION_TEMP_MEM: "TEMP_MEM",
    SECTION_PERM_MEM: "PERM_MEM",
    SECTION_PAYLOAD: "PAYLOAD",
    SECTION_PAYLOAD_PARAM: "PAYLOAD_PARAM",
}
ATTRIBUTE_MR_EXTEND: Final = 0x1
ATTRIBUTE_PAGE_AUG: Final = 0x2
PAGE: Final = 0x1000
MR_EXTEND_CHUNK: Final = 0x100
PAGE_ORDER_PER_PAGE: Final = "single-pass"
PAGE_ORDER_PER_SECTION: Final = "two-pass"
PAGE_ORDERS: Final = (PAGE_ORDER_PER_PAGE, PAGE_ORDER_PER_SECTION)
MAX_FIRMWARE_BYTES: Final = 64 * 1024 * 1024
MAX_SECTIONS: Final = 64
_FOOTER_BYTES: Final = 32
_SECTION: Final = struct.Struct("<IIQQII")
_DESCRIPTOR: Final = struct.Struct("<4sIII")


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


@dataclass(frozen=True, slots=True)
class TdvfSection:
    """One TDVF metadata section."""

    data_offset: int
    raw_size: int
    address: int
    memory_size: int
    section_type: int
    attributes: int

    @property
    def type_name(self) -> str:
        """BFV, CFV, TD_HOB, ... (or the number). Raises nothing."""
        return SECTION_TYPE_NAMES.get(self.section_type, str(self.section_type))


def _guid_table(firmware: memoryview) -> dict[uuid.UUID, bytes]:
    size = len(firmware)
    footer = size - _FOOTER_BYTES
    if footer < 18 or uuid.UUID(bytes_le=bytes(firmware[footer - 16 : footer])) != (
        TABLE_FOOTER_GUID
    ):
        raise FirmwareFormatError(
            "no OVMF GUIDed table footer 32 bytes before the end: not an OVMF/TDVF image "
            "(give the whole flash image, e.g. OVMF.fd, not a CODE or VARS part)"
        )
    (table_length,) = struct.unpack_from("<H", firmware, footer - 18)
    start = footer - table_length
    if table_length < 18 or start < 0:
        raise FirmwareFormatError(f"the GUIDed table length {table_length} is impossible")
    entries: dict[uuid.UUID, bytes] = {}
    cursor = footer - 18
    while cursor - 18 >= start:
        guid = uuid.UUID(bytes_le=bytes(firmware[cursor - 16 : cursor]))
        (length,) = struct.unpack_from("<H", firmware, cursor - 18)
        if length < 18 or cursor - length < start:
            raise FirmwareFormatError(f"GUIDed table entry {guid} has an impossible length")
        entries.setdefault(guid, bytes(firmware[cursor - length : cursor - 18]))
        cursor -= length
    return entries


def read_tdvf_sections(firmware: bytes | memoryview) -> tuple[TdvfSection, ...]:
    """The TDVF metadata sections of a flash image. Raises FirmwareFormatError."""
    view = memoryview(firmware)
    if len(view) > MAX_FIRMWARE_BYTES:
        raise FirmwareFormatError(f"firmware of {len(view)} bytes is larger than any TDVF")
    entry = _guid_table(view).get(TDX_METADATA_OFFSET_GUID)
    if entry is None or len(entry) < 4:
        raise FirmwareFormatError(
            "the firmware has no TDX metadata offset entry: it is not built with TDX support"
        )
    (offset_from_end,) = struct.unpack_from("<I", entry, len(entry) - 4)
    descriptor = len(view) - offset_from_end
    if not 0 <= descriptor <= len(view) - _DESCRIPTOR.size:
        raise FirmwareFormatError(f"TDX metadata offset {offset_from_end:#x} is outside the file")
    signature, _length, version, count = _DESCRIPTOR.unpack_from(view, descriptor)
    if signature != TDVF_SIGNATURE:
        raise FirmwareFormatError(f'no "TDVF" descriptor at file offset {descriptor:#x}')
    if version != TDVF_VERSION:
        raise FirmwareFormatError(f"TDVF metadata version {version} is not supported (only 1)")
    if not 0 < count <= MAX_SECTIONS:
        raise FirmwareFormatError(f"TDVF metadata declares {count} sections")
    first = descriptor + _DESCRIPTOR.size
    if first + count * _SECTION.size > len(view):
        raise FirmwareFormatError("the TDVF section list passes the end of the file")
    sections = tuple(
        TdvfSection(*_SECTION.unpack_from(view, first + number * _SECTION.size))
        for number in range(count)
    )
    for number, section in enumerate(sections):
        _check_section(number, section, len(view))
    return sections


def _check_section(number: int, section: TdvfSection, firmware_size: int) -> None:
    where = f"TDVF section {number} ({section.type_name})"
    if section.section_type not in SECTION_TYPE_NAMES:
        raise FirmwareFormatError(f"{where} has an unknown type")
    if section.address % PAGE or section.memory_size % PAGE:
        raise FirmwareFormatError(f"{where} is not page-aligned")
    if section.raw_size > section.memory_size:
        raise FirmwareFormatError(f"{where} has more raw data than memory")
    if section.data_offset + section.raw_size > firmware_size:
        raise FirmwareFormatError(f"{where} raw data passes the end of the file")
    if section.attributes & ATTRIBUTE_MR_EXTEND and section.attributes & ATTRIBUTE_PAGE_AUG:
        raise FirmwareFormatError(f"{where} is both MR.EXTEND and PAGE.AUG")
    if section.attributes & ATTRIBUTE_MR_EXTEND and section.section_type not in (
        SECTION_BFV,
        SECTION_CFV,
    ):
        raise FirmwareFormatError(f"{where} is MR.EXTEND but its content is not in the file")
    if section.attributes & ~(ATTRIBUTE_MR_EXTEND | ATTRIBUTE_PAGE_AUG):
        raise FirmwareFormatError(f"{where} has unknown attributes {section.attributes:#x}")


def compute_mrtd(firmware: bytes | memoryview, page_order: str) -> bytes:
    """MRTD of a TD launched with this firmware, for ``page_order``.

    Raises FirmwareFormatError for bad metadata and ValueError for an unknown order.
    """
    if page_order not in PAGE_ORDERS:
        raise ValueError(f"page order must be one of {', '.join(PAGE_ORDERS)}")
    view = memoryview(firmware)
    sections = read_tdvf_sections(view)
    digest = hashlib.sha384()
    for section in sections:
        pages = range(section.memory_size // PAGE)
        if page_order == PAGE_ORDER_PER_SECTION:
            for page in pages:
                _page_add(digest, section, page)
            for page in pages:
                _mr_extend(digest, view, section, page)
        else:
            for page in pages:
                _page_add(digest, section, page)
                _mr_extend(digest, view, section, page)
    return digest.digest()


def _record(operation: bytes, address: int) -> bytes:
    return operation.ljust(16, b"\x00") + struct.pack("<Q", address) + bytes(104)


def _page_add(digest: _Digest, section: TdvfSection, page: int) -> None:
    if not section.attributes & ATTRIBUTE_PAGE_AUG:
        digest.update(_record(b"MEM.PAGE.ADD", section.address + page * PAGE))


def _mr_extend(digest: _Digest, firmware: memoryview, section: TdvfSection, page: int) -> None:
    if not section.attributes & ATTRIBUTE_MR_EXTEND:
        return
    for chunk in range(PAGE // MR_EXTEND_CHUNK):
        offset = page * PAGE + chunk * MR_EXTEND_CHUNK
        digest.update(_record(b"MR.EXTEND", section.address + offset))
        digest.update(_section_bytes(firmware, section, offset))


def _section_bytes(firmware: memoryview, section: TdvfSection, offset: int) -> bytes:
    """256 bytes of the section's memory image: its raw data, then zeros."""
    start = section.data_offset + offset
    available = max(0, min(MR_EXTEND_CHUNK, section.raw_size - offset))
    return bytes(firmware[start : start + available]) + bytes(MR_EXTEND_CHUNK - available)


def td_hob_layout(sections: tuple[TdvfSection, ...]) -> TdHobLayout:
    """The TD HOB layout the firmware's TD_HOB and TEMP_MEM sections give QEMU.

    Raises FirmwareFormatError unless there is exactly one TD_HOB section.
    """
    hobs = [s for s in sections if s.section_type == SECTION_TD_HOB]
    if len(hobs) != 1:
        raise FirmwareFormatError(f"the firmware has {len(hobs)} TD_HOB sections, not one")
    ranges = tuple(
        sorted(
            (s.address, s.memory_size)
            for s in sections
            if s.section_type in (SECTION_TD_HOB, SECTION_TEMP_MEM)
        )
    )
    return TdHobLayout(hobs[0].address, ranges)
