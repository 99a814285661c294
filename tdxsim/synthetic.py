"""Deterministic stand-ins for a kernel and an initrd, built from a label (no I/O).

The simulator's built-in images name their kernel and initrd by a label (for example
``vmlinuz-6.1.0-18-amd64``) rather than shipping real files. The measurement calculator
needs bytes it accepts, so each label becomes:

* a **kernel**: a small PE32+ image that is also a Linux bzImage (boot protocol 2.15,
  setup header at 0x1F1 with the "HdrS" signature, ``LOADED_HIGH`` and
  ``XLF_CAN_BE_LOADED_ABOVE_4G`` set), as a real x86-64 ``vmlinuz`` with an EFI stub is.
  Its ``kernel_version`` string is the label; its ``.text`` section is SHAKE-256 output
  keyed by the label. It is not executable code: nothing ever runs it, only its
  Authenticode digest and its setup header matter;
* an **initrd**: a ``newc`` cpio archive (what the kernel unpacks as an initramfs) holding
  one file, ``tdxsim-initrd``, whose content is the label, padded with zeros to
  :data:`INITRD_BYTES` (the kernel's unpacker skips zero padding between archives).

Every label gives the same sizes (:data:`KERNEL_BYTES`, :data:`INITRD_BYTES`), so two
synthetic initrds differ only in content: QEMU writes the initrd's size into the
kernel's setup header, so with equal sizes a changed initrd moves RTMR2 alone, as a
rebuilt initramfs of the same size would.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Final

from tdx_boot_attest.tdxsim.errors import ProfileError

MAX_LABEL_BYTES: Final = 1024
SETUP_SECTS: Final = 3
SETUP_BYTES: Final = (SETUP_SECTS + 1) * 512
TEXT_BYTES: Final = 0x3000
KERNEL_BYTES: Final = SETUP_BYTES + TEXT_BYTES
INITRD_BYTES: Final = 8192
INITRD_FILE_NAME: Final = "tdxsim-initrd"

_PE_OFFSET: Final = 0x40
_OPTIONAL_HEADER_BYTES: Final = 240  # PE32+ with 16 data-directory entries
_SECTION: Final = struct.Struct("<8sIIIIIIHHI")
_SECTION_FLAGS: Final = 0x60000020  # code, executable, readable
_IMAGE_CHARACTERISTICS: Final = 0x0206  # executable image, line numbers and debug stripped
_MACHINE_X86_64: Final = 0x8664
_PE32_PLUS: Final = 0x20B
_SUBSYSTEM_EFI_APPLICATION: Final = 10
_BOOT_PROTOCOL: Final = 0x020F
_LOADED_HIGH: Final = 0x01
_XLOADFLAGS: Final = 0x7F  # 64-bit entry, above 4G, EFI handover (32/64), kexec, 5-level
_INITRD_ADDR_MAX: Final = 0x7FFFFFFF
_VERSION_OFFSET: Final = 0x400  # where the kernel_version string goes in the setup code
_CPIO_MAGIC: Final = b"070701"
_CPIO_TRAILER: Final = "TRAILER!!!"
_S_IFREG: Final = 0o100000


def _label_bytes(label: str, what: str) -> bytes:
    if not isinstance(label, str) or not label or not label.isprintable():
        raise ProfileError(f"a synthetic {what} label is non-empty printable text")
    raw = label.encode("utf-8")
    if len(raw) > MAX_LABEL_BYTES:
        raise ProfileError(f"a synthetic {what} label is at most {MAX_LABEL_BYTES} bytes")
    return raw


def synthetic_kernel(label: str) -> bytes:
    """The synthetic bzImage for ``label`` (:data:`KERNEL_BYTES` bytes, same label, same
    bytes). Raises ProfileError for an empty, unprintable or too long label."""
    raw = _label_bytes(label, "kernel")
    version = raw[: SETUP_BYTES - _VERSION_OFFSET - 1]
    image = bytearray(SETUP_BYTES)
    image[0:2] = b"MZ"
    struct.pack_into("<I", image, 0x3C, _PE_OFFSET)
    image[_PE_OFFSET : _PE_OFFSET + 4] = b"PE\x00\x00"
    coff = _PE_OFFSET + 4
    struct.pack_into(
        "<HHIIIHH", image, coff, _MACHINE_X86_64, 2, 0, 0, 0, _OPTIONAL_HEADER_BYTES,
        _IMAGE_CHARACTERISTICS,
    )  # fmt: skip
    optional = coff + 20
    struct.pack_into("<H", image, optional, _PE32_PLUS)
    struct.pack_into("<I", image, optional + 4, TEXT_BYTES)  # SizeOfCode
    struct.pack_into("<I", image, optional + 16, SETUP_BYTES)  # AddressOfEntryPoint
    struct.pack_into("<I", image, optional + 20, SETUP_BYTES)  # BaseOfCode
    struct.pack_into("<II", image, optional + 32, 0x200, 0x200)  # section/file alignment
    struct.pack_into("<I", image, optional + 56, KERNEL_BYTES)  # SizeOfImage
    struct.pack_into("<I", image, optional + 60, 0x200)  # SizeOfHeaders
    struct.pack_into("<H", image, optional + 68, _SUBSYSTEM_EFI_APPLICATION)
    struct.pack_into("<I", image, optional + 108, 16)  # NumberOfRvaAndSizes
    table = optional + _OPTIONAL_HEADER_BYTES
    sections = (
        (b".setup", 0x200, SETUP_BYTES - 0x200),
        (b".text", SETUP_BYTES, TEXT_BYTES),
    )
    for number, (name, offset, size) in enumerate(sections):
        _SECTION.pack_into(
            image, table + _SECTION.size * number, name, size, offset, size, offset,
            0, 0, 0, 0, _SECTION_FLAGS,
        )  # fmt: skip
    image[0x1F1] = SETUP_SECTS
    struct.pack_into("<H", image, 0x1FE, 0xAA55)  # boot_flag
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, _BOOT_PROTOCOL)
    struct.pack_into("<H", image, 0x20E, _VERSION_OFFSET - 0x200)  # kernel_version
    image[0x211] = _LOADED_HIGH
    struct.pack_into("<I", image, 0x22C, _INITRD_ADDR_MAX)
    struct.pack_into("<H", image, 0x236, _XLOADFLAGS)
    image[_VERSION_OFFSET : _VERSION_OFFSET + len(version)] = version
    text = hashlib.shake_256(b"tdxsim synthetic kernel\x00" + raw).digest(TEXT_BYTES)
    return bytes(image) + text


def synthetic_initrd(label: str) -> bytes:
    """The synthetic initrd for ``label`` (:data:`INITRD_BYTES` bytes, same label, same
    bytes). Raises ProfileError for an empty, unprintable or too long label."""
    raw = _label_bytes(label, "initrd")
    archive = _cpio_entry(1, _S_IFREG | 0o644, INITRD_FILE_NAME, raw + b"\n")
    archive += _cpio_entry(0, 0, _CPIO_TRAILER, b"")
    return archive + bytes(INITRD_BYTES - len(archive))


def _cpio_entry(inode: int, mode: int, name: str, data: bytes) -> bytes:
    """One ``newc`` record: header, NUL-terminated name and data, each padded to 4 bytes."""
    encoded = name.encode() + b"\x00"
    nlink = 1 if mode else 0
    fields = (inode, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
    header = _CPIO_MAGIC + b"".join(b"%08X" % value for value in fields)
    entry = header + encoded
    entry += bytes(-len(entry) % 4) + data
    return entry + bytes(-len(entry) % 4)
