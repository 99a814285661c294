"""Memory sizes, q35's RAM split and the TD HOB (reproduced from real TDX logs)."""

from __future__ import annotations

import pytest

from tdx_boot_attest.agent.eventlog import parse_event_log
from tdx_boot_attest.agent.measurement.errors import MemorySizeError, PlatformProfileError
from tdx_boot_attest.agent.measurement.memory import (
    GIB,
    MIB,
    format_memory_size,
    parse_memory_size,
    q35_below_4g,
    q35_hole64_class,
    q35_ram_ranges,
)
from tdx_boot_attest.agent.measurement.td_hob import (
    EDK2_OVMF_LAYOUT,
    TdHobLayout,
    ram_entries,
    td_hob_digest,
)
from tests.agent.measurement.builders import ASSETS


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2G", 2 * GIB), ("2048M", 2 * GIB), ("2048", 2 * GIB), ("1t", 1024 * GIB),
     ("3584MiB", 3584 * MIB), (" 8 GB ", 8 * GIB)],
)  # fmt: skip
def test_sizes_read_as_qemu_m_reads_them(text: str, expected: int) -> None:
    assert parse_memory_size(text) == expected
    assert parse_memory_size(format_memory_size(expected)) == expected


@pytest.mark.parametrize("text", ["", "two", "2X", "-1G", "1K", "0", "64T", "1.5G"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(MemorySizeError) as caught:
        parse_memory_size(text)
    assert caught.value.reason == "memory_size_invalid"


def test_q35_split() -> None:
    assert q35_ram_ranges(2 * GIB) == ((0, 2 * GIB),)
    assert q35_below_4g(0xA0000000) == 0xA0000000
    assert q35_ram_ranges(8 * GIB) == ((0, 2 * GIB), (4 * GIB, 6 * GIB))
    assert q35_below_4g(0xB0000000) == 2 * GIB
    assert q35_hole64_class(2 * GIB) == q35_hole64_class(0xA0000000) == 0
    assert q35_hole64_class(8 * GIB) == q35_hole64_class(7 * GIB + 512 * MIB) == 6


@pytest.mark.parametrize(
    ("log", "memory"),
    [("qemu-direct-boot.ccel", 8 * GIB), ("qemu-direct-boot-initrd.ccel", 2 * GIB)],
)
def test_td_hob_digest_of_real_logs(log: str, memory: int) -> None:
    events = parse_event_log((ASSETS / log).read_bytes()).events
    assert events[0].name == "TD HOB"
    assert td_hob_digest(EDK2_OVMF_LAYOUT, memory) == events[0].sha384
    assert td_hob_digest(EDK2_OVMF_LAYOUT, memory + 256 * MIB) != events[0].sha384


def test_ram_entries_split_around_accepted_ranges() -> None:
    entries = ram_entries(2 * GIB, EDK2_OVMF_LAYOUT.accepted_ranges)
    assert entries[:3] == [
        (0, 0x800000, False),
        (0x800000, 0x6000, True),
        (0x806000, 0x3000, False),
    ]
    assert entries[-1] == (0x820000, 2 * GIB - 0x820000, False)
    assert sum(length for _, length, _ in entries) == 2 * GIB


@pytest.mark.parametrize(
    ("address", "ranges", "words"),
    [
        (0x809000, ((0x809001, 0x1000),), "pages"),
        (0x809000, ((0x809000, 0x2000), (0x80A000, 0x1000)), "overlaps"),
        (0x800000, ((0x809000, 0x2000),), "not the start"),
        (0x809000, (), "1 to"),
        (0xFFFFF000, ((0xFFFFF000, 0x2000),), "below 4 GiB"),
    ],
)
def test_bad_layouts_are_refused(
    address: int, ranges: tuple[tuple[int, int], ...], words: str
) -> None:
    with pytest.raises(PlatformProfileError, match=words):
        TdHobLayout(address, ranges)


def test_a_range_outside_the_ram_is_refused() -> None:
    layout = TdHobLayout(0x809000, ((0x809000, 0x2000), (0x7FFFF000, 0x2000)))
    with pytest.raises(PlatformProfileError, match="not inside"):
        td_hob_digest(layout, 2 * GIB)
