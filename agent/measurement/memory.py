"""A TD's memory size: reading ``2G``-style text, and how QEMU's q35 machine splits RAM.

QEMU's q35 machine (``pc_q35_init``) puts RAM below 4 GiB up to 2 GiB when the VM has
at least 2.75 GiB (0xB0000000), and up to 2.75 GiB otherwise; the rest starts at 4 GiB.
Both the TD HOB and the initrd address depend on this split. TDX guests are always q35.
"""

from __future__ import annotations

import re
from typing import Final

from tdx_boot_attest.agent.measurement.errors import MemorySizeError

MIB: Final = 1024 * 1024
GIB: Final = 1024 * MIB
FOUR_GIB: Final = 4 * GIB
Q35_GIGABYTE_ALIGN_THRESHOLD: Final = 0xB0000000
Q35_LOW_SPLIT_LARGE: Final = 0x80000000
Q35_LOW_SPLIT_SMALL: Final = 0xB0000000
MIN_MEMORY_BYTES: Final = 16 * MIB  # the firmware's own regions sit below 9 MiB
MAX_MEMORY_BYTES: Final = 16 * 1024 * GIB
_SIZE_TEXT: Final = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_UNITS: Final = {"": MIB, "K": 1024, "M": MIB, "G": GIB, "T": 1024 * GIB}


def parse_memory_size(text: str) -> int:
    """Bytes of ``text`` read as QEMU's ``-m`` reads it (no suffix = MiB; K, M, G, T).

    Raises MemorySizeError for anything else or a size a TD cannot have.
    """
    found = _SIZE_TEXT.match(text)
    if found is None:
        raise MemorySizeError(
            f"memory size {text!r} is not a number with an optional K, M, G or T suffix "
            "(e.g. 2G, 2048M; no suffix means MiB, as for qemu -m)"
        )
    value = int(found.group(1)) * _UNITS[found.group(2).upper()]
    return check_memory_size(value)


def check_memory_size(memory_bytes: int) -> int:
    """``memory_bytes`` when a TD can have that much RAM; raises MemorySizeError."""
    if isinstance(memory_bytes, bool) or not isinstance(memory_bytes, int):
        raise MemorySizeError("the memory size must be an integer number of bytes")
    if not MIN_MEMORY_BYTES <= memory_bytes <= MAX_MEMORY_BYTES:
        raise MemorySizeError(
            f"memory size {memory_bytes} bytes is outside {MIN_MEMORY_BYTES} to {MAX_MEMORY_BYTES}"
        )
    if memory_bytes % MIB:
        raise MemorySizeError(f"memory size {memory_bytes} bytes is not a whole number of MiB")
    return memory_bytes


def q35_below_4g(memory_bytes: int) -> int:
    """Bytes of RAM QEMU's q35 machine maps below 4 GiB. Raises nothing."""
    if memory_bytes >= Q35_GIGABYTE_ALIGN_THRESHOLD:
        return min(memory_bytes, Q35_LOW_SPLIT_LARGE)
    return min(memory_bytes, Q35_LOW_SPLIT_SMALL)


def q35_ram_ranges(memory_bytes: int) -> tuple[tuple[int, int], ...]:
    """The (start, length) RAM ranges of a q35 VM, in address order. Raises nothing."""
    below = q35_below_4g(memory_bytes)
    if memory_bytes > below:
        return ((0, below), (FOUR_GIB, memory_bytes - below))
    return ((0, below),)


def format_memory_size(memory_bytes: int) -> str:
    """``memory_bytes`` as the shortest exact text (``2G``, ``2560M``). Raises nothing."""
    for suffix, unit in (("T", 1024 * GIB), ("G", GIB), ("M", MIB)):
        if memory_bytes % unit == 0:
            return f"{memory_bytes // unit}{suffix}"
    return f"{memory_bytes}B"


def q35_hole64_class(memory_bytes: int) -> int:
    """Whole GiB of RAM above 4 GiB, rounded up: what QEMU's ACPI tables depend on.

    QEMU's DSDT describes the 64-bit PCI window, which starts at the end of the RAM
    above 4 GiB rounded up to 1 GiB (``pc_pci_hole64_start``); the 32-bit window of q35
    is fixed. Two sizes with the same class get the same ACPI tables. Raises nothing.
    """
    above = memory_bytes - q35_below_4g(memory_bytes)
    return -(-above // GIB)
