"""Synthetic kernels and initrds: inputs the calculator accepts, the same for the same label."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tdx_boot_attest.agent.measurement.linux_boot import (
    XLF_CAN_BE_LOADED_ABOVE_4G,
    qemu_patched_kernel,
    read_setup_header,
)
from tdx_boot_attest.agent.measurement.pe import authenticode_digest, read_layout
from tdx_boot_attest.tdxsim.errors import ProfileError
from tdx_boot_attest.tdxsim.synthetic import (
    INITRD_BYTES,
    INITRD_FILE_NAME,
    KERNEL_BYTES,
    synthetic_initrd,
    synthetic_kernel,
)


def test_a_synthetic_kernel_is_a_bzimage_and_a_pe_image() -> None:
    kernel = synthetic_kernel("vmlinuz-6.1.0-18-amd64")

    header = read_setup_header(kernel)
    layout = read_layout(kernel)
    assert len(kernel) == KERNEL_BYTES
    assert header.protocol == 0x20F
    assert header.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G
    assert header.setup_bytes == 2048
    assert len(layout.sections) == 2
    assert layout.certificate_size == 0
    # kernel_version (0x20E) points at the label, as in a real bzImage.
    (version_offset,) = struct.unpack_from("<H", kernel, 0x20E)
    start = version_offset + 0x200
    assert kernel[start : kernel.index(b"\x00", start)] == b"vmlinuz-6.1.0-18-amd64"
    # QEMU's direct boot can patch it; the patched image still hashes.
    patched = qemu_patched_kernel(
        kernel, b"console=ttyS0", 100, below_4g_bytes=2 << 30, acpi_data_size=0x28000,
        rule="above-4g-flag",
    )  # fmt: skip
    assert authenticode_digest(patched) != authenticode_digest(kernel)


def test_file_recognises_the_kernel_and_the_initrd(tmp_path: Path) -> None:
    if shutil.which("file") is None:
        pytest.skip("file(1) is not installed (scripts/install-system-deps.sh test)")
    (tmp_path / "k").write_bytes(synthetic_kernel("vmlinuz-test"))
    (tmp_path / "i").write_bytes(synthetic_initrd("initrd-test"))

    described = subprocess.run(
        ["file", "-b", str(tmp_path / "k"), str(tmp_path / "i")],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.splitlines()  # fmt: skip

    assert described[0].startswith("Linux kernel x86 boot executable bzImage, version vmlinuz-test")
    assert described[1].startswith("ASCII cpio archive (SVR4 with no CRC)")


def _newc_files(archive: bytes) -> dict[str, bytes]:
    """The files of a newc cpio archive, read here field by field."""
    files: dict[str, bytes] = {}
    offset = 0
    while True:
        assert archive[offset : offset + 6] == b"070701"
        fields = [int(archive[offset + 6 + 8 * n : offset + 14 + 8 * n], 16) for n in range(13)]
        size, name_size = fields[6], fields[11]
        name_start = offset + 110
        name = archive[name_start : name_start + name_size - 1].decode()
        data_start = name_start + name_size + (-(110 + name_size) % 4)
        if name == "TRAILER!!!":
            assert archive[data_start:] == bytes(len(archive) - data_start)
            return files
        files[name] = archive[data_start : data_start + size]
        offset = data_start + size + (-size % 4)


def test_a_synthetic_initrd_is_a_newc_archive_holding_the_label() -> None:
    initrd = synthetic_initrd("initrd.img-6.1.0-18-amd64")

    assert len(initrd) == INITRD_BYTES
    assert _newc_files(initrd) == {INITRD_FILE_NAME: b"initrd.img-6.1.0-18-amd64\n"}


def test_labels_decide_the_bytes_and_never_the_size() -> None:
    assert synthetic_kernel("a") == synthetic_kernel("a")
    assert synthetic_initrd("a") == synthetic_initrd("a")
    assert authenticode_digest(synthetic_kernel("a")) != authenticode_digest(synthetic_kernel("b"))
    assert synthetic_initrd("a") != synthetic_initrd("b")
    long_label = "x" * 1024
    assert len(synthetic_kernel(long_label)) == len(synthetic_kernel("a")) == KERNEL_BYTES
    assert len(synthetic_initrd(long_label)) == len(synthetic_initrd("a")) == INITRD_BYTES


@pytest.mark.parametrize("label", ["", "tab\there", "x" * 1025, "new\nline"])
def test_bad_labels_are_refused(label: str) -> None:
    with pytest.raises(ProfileError):
        synthetic_kernel(label)
    with pytest.raises(ProfileError):
        synthetic_initrd(label)
