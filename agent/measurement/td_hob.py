"""The TD HOB as QEMU builds it, and its digest (the first RTMR0 event).

QEMU (hw/i386/tdvf-hob.c, with the RAM list of target/i386/kvm/tdx.c) writes into the
firmware's TD_HOB section a PHIT HOB followed by one resource-descriptor HOB per RAM
range, then an end-of-list HOB:

* the RAM ranges are the VM's RAM (q35 split, :mod:`agent.measurement.memory`) cut by
  the TDVF sections of type TD_HOB and TEMP_MEM, which QEMU accepts before launch: each
  such section becomes its own "system memory" range (type 0) and what is left of the
  RAM stays "unaccepted" (type 7); the list is sorted by address and adjacent ranges are
  not merged;
* every resource HOB has the attributes PRESENT | INITIALIZED | TESTED (7);
* the PHIT HOB's EfiEndOfHobList is the guest address just past the end-of-list HOB.

TDVF measures the HOB list without the end-of-list HOB (EV_EFI_HANDOFF_TABLES2,
"TdxTable"). The digest therefore depends only on the TDVF sections and the TD's
memory size. This layout reproduces the TD HOB digests of real TDX logs.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from tdx_boot_attest.agent.measurement.errors import PlatformProfileError
from tdx_boot_attest.agent.measurement.memory import q35_ram_ranges

PAGE: Final = 0x1000
HOB_TYPE_HANDOFF: Final = 0x0001
HOB_TYPE_RESOURCE_DESCRIPTOR: Final = 0x0003
HOB_TYPE_END_OF_LIST: Final = 0xFFFF
HANDOFF_TABLE_VERSION: Final = 9
RESOURCE_SYSTEM_MEMORY: Final = 0x00
RESOURCE_MEMORY_UNACCEPTED: Final = 0x07
RESOURCE_ATTRIBUTES: Final = 0x07  # PRESENT | INITIALIZED | TESTED
MAX_ACCEPTED_RANGES: Final = 64
_PHIT: Final = struct.Struct("<HHIIIQQQQQ")
_RESOURCE: Final = struct.Struct("<HHI16sIIQQ")
_END_HOB_BYTES: Final = 8

# EDK II's OvmfPkg TDX metadata (OvmfPkg/ResetVector/X64/IntelTdxMetadata.asm with the
# OvmfPkgX64 / IntelTdxX64 memory map): page tables at 0x800000 (24 KiB), the TD HOB at
# 0x809000 (8 KiB), TDX init memory (work area) at 0x80B000 (8 KiB), the SEC heap and
# stack at 0x810000 (64 KiB).
EDK2_OVMF_TD_HOB_ADDRESS: Final = 0x809000
EDK2_OVMF_ACCEPTED_RANGES: Final = (
    (0x800000, 0x6000),
    (0x809000, 0x2000),
    (0x80B000, 0x2000),
    (0x810000, 0x10000),
)


@dataclass(frozen=True, slots=True)
class TdHobLayout:
    """What QEMU needs to write the TD HOB: its guest address and the accepted ranges."""

    hob_address: int
    accepted_ranges: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        check_layout(self.hob_address, self.accepted_ranges)


def check_layout(hob_address: int, ranges: Sequence[tuple[int, int]]) -> None:
    """Raise PlatformProfileError unless the ranges are page-aligned, disjoint, below 4 GiB."""
    if not 0 < len(ranges) <= MAX_ACCEPTED_RANGES:
        raise PlatformProfileError(f"a TD HOB layout has 1 to {MAX_ACCEPTED_RANGES} ranges")
    previous_end = -1
    for start, length in sorted(ranges):
        if start % PAGE or length % PAGE or length <= 0:
            raise PlatformProfileError(
                f"TD HOB range {start:#x}+{length:#x} is not a whole number of pages"
            )
        if start < previous_end:
            raise PlatformProfileError(f"TD HOB range {start:#x} overlaps the one before it")
        if start + length > 0xFFFFFFFF:
            raise PlatformProfileError(f"TD HOB range {start:#x} does not lie below 4 GiB")
        previous_end = start + length
    if not any(start == hob_address for start, _ in ranges):
        raise PlatformProfileError(
            f"the TD HOB address {hob_address:#x} is not the start of an accepted range"
        )


EDK2_OVMF_LAYOUT: Final = TdHobLayout(EDK2_OVMF_TD_HOB_ADDRESS, EDK2_OVMF_ACCEPTED_RANGES)


def ram_entries(
    memory_bytes: int, accepted: Iterable[tuple[int, int]]
) -> list[tuple[int, int, bool]]:
    """(start, length, accepted) RAM entries as QEMU's TDX code lists them, sorted.

    Raises PlatformProfileError when an accepted range does not lie inside the RAM.
    """
    entries = [(start, length, False) for start, length in q35_ram_ranges(memory_bytes)]
    for start, length in accepted:
        end = start + length
        for number, (entry_start, entry_length, is_accepted) in enumerate(entries):
            entry_end = entry_start + entry_length
            if not is_accepted and entry_start <= start and end <= entry_end:
                pieces = [(start, length, True)]
                if start > entry_start:
                    pieces.insert(0, (entry_start, start - entry_start, False))
                if end < entry_end:
                    pieces.append((end, entry_end - end, False))
                entries[number : number + 1] = pieces
                break
        else:
            raise PlatformProfileError(
                f"firmware range {start:#x}+{length:#x} is not inside the TD's "
                f"{memory_bytes}-byte RAM"
            )
    entries.sort(key=lambda entry: entry[0])
    return entries


def td_hob_bytes(layout: TdHobLayout, memory_bytes: int) -> bytes:
    """The HOB list TDVF measures (without the end-of-list HOB). Raises PlatformProfileError."""
    resources = b"".join(
        _RESOURCE.pack(
            HOB_TYPE_RESOURCE_DESCRIPTOR,
            _RESOURCE.size,
            0,
            bytes(16),
            RESOURCE_SYSTEM_MEMORY if accepted else RESOURCE_MEMORY_UNACCEPTED,
            RESOURCE_ATTRIBUTES,
            start,
            length,
        )
        for start, length, accepted in ram_entries(memory_bytes, layout.accepted_ranges)
    )
    end_of_list = layout.hob_address + _PHIT.size + len(resources) + _END_HOB_BYTES
    phit = _PHIT.pack(
        HOB_TYPE_HANDOFF, _PHIT.size, 0, HANDOFF_TABLE_VERSION, 0, 0, 0, 0, 0, end_of_list
    )
    return phit + resources


def td_hob_digest(layout: TdHobLayout, memory_bytes: int) -> bytes:
    """SHA-384 of the TD HOB for ``memory_bytes`` of RAM. Raises PlatformProfileError."""
    return hashlib.sha384(td_hob_bytes(layout, memory_bytes)).digest()
