"""The setup header and QEMU's direct-boot patching of it."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tdx_boot_attest.agent.measurement.errors import SetupHeaderError
from tdx_boot_attest.agent.measurement.linux_boot import (
    INITRD_MAX_ABOVE_4G_FLAG,
    INITRD_MAX_HEADER,
    initrd_address,
    qemu_patched_kernel,
    read_setup_header,
)
from tests.agent.measurement.builders import SETUP_BYTES, bzimage

ACPI = 0x28000
TWO_GIB = 0x80000000


def _u16(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<H", data, offset)[0])


def _u32(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<I", data, offset)[0])


def test_header_fields() -> None:
    header = read_setup_header(bzimage())
    assert (header.protocol, header.setup_bytes, header.initrd_addr_max) == (
        0x20F,
        SETUP_BYTES,
        0x7FFFFFFF,
    )


def test_patch_writes_exactly_the_boot_loader_fields() -> None:
    kernel = bzimage()
    patched = qemu_patched_kernel(
        kernel, b"console=ttyS0", 40_000_000,
        below_4g_bytes=TWO_GIB, acpi_data_size=ACPI, rule=INITRD_MAX_HEADER,
    )  # fmt: skip
    assert len(patched) == len(kernel)
    changed = {i for i in range(len(kernel)) if kernel[i] != patched[i]}
    assert changed <= set(range(0x210, 0x22C))
    assert patched[0x210] == 0xB0
    assert patched[0x211] == 0x81
    assert _u16(patched, 0x224) == 0x20000 - 0x10000 - 0x200
    assert _u32(patched, 0x228) == 0x20000
    # initrd_max = min(initrd_addr_max, 2 GiB - ACPI data - 1), then page-aligned down.
    assert _u32(patched, 0x218) == (0x7FFD7FFF - 40_000_000) & ~0xFFF
    assert _u32(patched, 0x21C) == 40_000_000


def test_without_an_initrd_its_fields_stay() -> None:
    patched = qemu_patched_kernel(
        bzimage(), b"", None, below_4g_bytes=TWO_GIB, acpi_data_size=ACPI, rule=INITRD_MAX_HEADER
    )
    assert _u32(patched, 0x218) == 0
    assert _u32(patched, 0x21C) == 0


def test_initrd_rules_differ_only_with_more_than_2_gib_below_4g() -> None:
    header = read_setup_header(bzimage())
    small = [
        initrd_address(header, 1 << 20, below_4g_bytes=TWO_GIB, acpi_data_size=ACPI, rule=rule)
        for rule in (INITRD_MAX_HEADER, INITRD_MAX_ABOVE_4G_FLAG)
    ]
    large = [
        initrd_address(header, 1 << 20, below_4g_bytes=0xA0000000, acpi_data_size=ACPI, rule=r)
        for r in (INITRD_MAX_HEADER, INITRD_MAX_ABOVE_4G_FLAG)
    ]
    assert small[0] == small[1]
    assert large == [(0x7FFFFFFF - (1 << 20)) & ~0xFFF, (0x9FFD7FFF - (1 << 20)) & ~0xFFF]
    no_flag = read_setup_header(bzimage(xloadflags=0))
    assert initrd_address(
        no_flag, 1 << 20, below_4g_bytes=0xA0000000, acpi_data_size=ACPI,
        rule=INITRD_MAX_ABOVE_4G_FLAG,
    ) == large[0]  # fmt: skip


def test_old_protocols_use_qemus_fallbacks() -> None:
    old = bzimage(protocol=0x201)
    patched = qemu_patched_kernel(
        old, b"ro", 4096, below_4g_bytes=TWO_GIB, acpi_data_size=ACPI, rule=INITRD_MAX_HEADER
    )
    assert _u16(patched, 0x20) == 0xA33F
    assert _u16(patched, 0x22) == 0x9A000 - 3 - 0x90000
    assert _u32(patched, 0x228) == 0
    assert _u32(patched, 0x218) == (0x37FFFFFF - 4096) & ~0xFFF


@pytest.mark.parametrize(
    ("cmdline", "mode"),
    [(b"vga=normal", 0xFFFF), (b"quiet vga=0x317", 0x317), (b"vga=791", 791), (b"vga=010", 8)],
)
def test_vga_sets_the_video_mode(cmdline: bytes, mode: int) -> None:
    patched = qemu_patched_kernel(
        bzimage(), cmdline, None, below_4g_bytes=TWO_GIB, acpi_data_size=ACPI,
        rule=INITRD_MAX_HEADER,
    )  # fmt: skip
    assert _u16(patched, 0x1FA) == mode


def test_a_vga_value_qemu_refuses_is_refused() -> None:
    with pytest.raises(SetupHeaderError, match="vga="):
        qemu_patched_kernel(
            bzimage(), b"vga=big", None, below_4g_bytes=TWO_GIB, acpi_data_size=ACPI,
            rule=INITRD_MAX_HEADER,
        )  # fmt: skip


def test_an_initrd_that_does_not_fit_is_refused() -> None:
    with pytest.raises(SetupHeaderError, match="does not fit") as caught:
        qemu_patched_kernel(
            bzimage(), b"", 0x7FFD7FFF, below_4g_bytes=TWO_GIB, acpi_data_size=ACPI,
            rule=INITRD_MAX_HEADER,
        )  # fmt: skip
    assert caught.value.reason == "setup_header_invalid"


@pytest.mark.parametrize(
    ("kernel", "words"),
    [
        (b"MZ" + bytes(100), "too short"),
        (bytes(8192), "HdrS"),
        (bzimage()[:0x1F1] + b"\xff" + bzimage()[0x1F2:0x1000], "setup_sects"),
    ],
)
def test_not_a_bzimage(kernel: bytes, words: str) -> None:
    with pytest.raises(SetupHeaderError, match=words):
        read_setup_header(kernel)


@settings(max_examples=300, deadline=None)
@given(
    header=st.binary(min_size=0x240, max_size=0x240),
    initrd=st.one_of(st.none(), st.integers(0, 2**32)),
    cmdline=st.binary(max_size=40).filter(lambda b: b"\x00" not in b),
)
def test_fuzz_headers_give_a_patched_kernel_or_the_typed_error(
    header: bytes, initrd: int | None, cmdline: bytes
) -> None:
    kernel = bytearray(bzimage())
    kernel[0x1F0:0x230] = header[0x1F0:0x230]
    kernel[0x202:0x206] = b"HdrS"
    try:
        patched = qemu_patched_kernel(
            bytes(kernel), cmdline, initrd, below_4g_bytes=TWO_GIB, acpi_data_size=ACPI,
            rule=INITRD_MAX_ABOVE_4G_FLAG,
        )  # fmt: skip
    except SetupHeaderError:
        return
    assert len(patched) == len(kernel)
