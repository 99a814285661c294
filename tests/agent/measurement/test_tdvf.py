"""TDVF metadata and MRTD from a firmware file."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tdx_boot_attest.agent.measurement.errors import FirmwareFormatError
from tdx_boot_attest.agent.measurement.td_hob import EDK2_OVMF_LAYOUT
from tdx_boot_attest.agent.measurement.tdvf import (
    PAGE_ORDER_PER_PAGE,
    PAGE_ORDER_PER_SECTION,
    compute_mrtd,
    read_tdvf_sections,
    td_hob_layout,
)
from tests.agent.measurement.builders import tdvf_firmware

DEBIAN_OVMF = Path("/usr/share/ovmf/OVMF.fd")
BFV = bytes(range(256)) * 16 * 2  # two pages
SECTIONS = [
    (0, len(BFV), 0xFFFFE000, 0x2000, 0, 1),  # BFV, measured
    (0, 0, 0x809000, 0x2000, 2, 0),  # TD_HOB
    (0, 0, 0x800000, 0x1000, 3, 0),  # TEMP_MEM
]


def _record(name: bytes, address: int) -> bytes:
    return name.ljust(16, b"\x00") + struct.pack("<Q", address) + bytes(104)


def _extends(page: int) -> bytes:
    return b"".join(
        _record(b"MR.EXTEND", 0xFFFFE000 + page * 0x1000 + chunk * 256)
        + BFV[page * 0x1000 + chunk * 256 : page * 0x1000 + (chunk + 1) * 256]
        for chunk in range(16)
    )


def test_sections_and_layout() -> None:
    sections = read_tdvf_sections(tdvf_firmware(SECTIONS, BFV))
    assert [s.type_name for s in sections] == ["BFV", "TD_HOB", "TEMP_MEM"]
    layout = td_hob_layout(sections)
    assert layout.hob_address == 0x809000
    assert layout.accepted_ranges == ((0x800000, 0x1000), (0x809000, 0x2000))


def test_mrtd_in_both_page_orders() -> None:
    firmware = tdvf_firmware(SECTIONS, BFV)
    adds = [_record(b"MEM.PAGE.ADD", 0xFFFFE000), _record(b"MEM.PAGE.ADD", 0xFFFFF000)]
    others = b"".join(
        _record(b"MEM.PAGE.ADD", address) for address in (0x809000, 0x80A000, 0x800000)
    )
    per_page = adds[0] + _extends(0) + adds[1] + _extends(1) + others
    per_section = adds[0] + adds[1] + _extends(0) + _extends(1) + others
    assert compute_mrtd(firmware, PAGE_ORDER_PER_PAGE) == hashlib.sha384(per_page).digest()
    assert compute_mrtd(firmware, PAGE_ORDER_PER_SECTION) == hashlib.sha384(per_section).digest()


def test_debian_ovmf_carries_the_edk2_layout() -> None:
    if not DEBIAN_OVMF.is_file():
        pytest.skip(f"{DEBIAN_OVMF} missing: run scripts/install-system-deps.sh vm (ovmf)")
    firmware = DEBIAN_OVMF.read_bytes()
    assert td_hob_layout(read_tdvf_sections(firmware)) == EDK2_OVMF_LAYOUT
    assert compute_mrtd(firmware, PAGE_ORDER_PER_PAGE) != compute_mrtd(
        firmware, PAGE_ORDER_PER_SECTION
    )


def _corrupt(firmware: bytes, offset: int, value: bytes) -> bytes:
    out = bytearray(firmware)
    out[offset : offset + len(value)] = value
    return bytes(out)


GOOD = tdvf_firmware(SECTIONS, BFV)
DESCRIPTOR = len(BFV)


@pytest.mark.parametrize(
    ("firmware", "words"),
    [
        (b"\xff" * 4096, "footer"),
        (_corrupt(GOOD, DESCRIPTOR, b"XXXX"), "TDVF"),
        (_corrupt(GOOD, DESCRIPTOR + 8, struct.pack("<I", 2)), "version 2"),
        (_corrupt(GOOD, DESCRIPTOR + 12, struct.pack("<I", 0)), "0 sections"),
        (_corrupt(GOOD, DESCRIPTOR + 12, struct.pack("<I", 60)), "passes the end"),
        (_corrupt(GOOD, DESCRIPTOR + 16 + 8, struct.pack("<Q", 0xFFFFE001)), "page-aligned"),
        (_corrupt(GOOD, DESCRIPTOR + 16 + 24, struct.pack("<I", 9)), "unknown type"),
        (_corrupt(GOOD, DESCRIPTOR + 16 + 28, struct.pack("<I", 3)), "MR.EXTEND and PAGE.AUG"),
        (_corrupt(GOOD, DESCRIPTOR + 16 + 4, struct.pack("<I", 0x3000)), "more raw data"),
        (_corrupt(GOOD, DESCRIPTOR + 48 + 28, struct.pack("<I", 1)), "not in the file"),
        (_corrupt(GOOD, DESCRIPTOR + 48 + 24, struct.pack("<I", 3)), "TD_HOB sections"),
    ],
)
def test_malformed_firmware_is_refused(firmware: bytes, words: str) -> None:
    with pytest.raises(FirmwareFormatError, match=words) as caught:
        td_hob_layout(read_tdvf_sections(firmware))
    assert caught.value.reason == "tdvf_metadata_invalid"


def test_unknown_page_order_is_refused() -> None:
    with pytest.raises(ValueError, match="page order"):
        compute_mrtd(GOOD, "three-pass")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), max_size=6))
def test_fuzz_mutated_firmware_gives_sections_or_the_typed_error(
    mutations: list[tuple[int, int]],
) -> None:
    firmware = bytearray(GOOD)
    for offset, value in mutations:
        firmware[offset] = value
    try:
        sections = read_tdvf_sections(bytes(firmware))
    except FirmwareFormatError:
        return
    assert sections
