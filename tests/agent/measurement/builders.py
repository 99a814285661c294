"""Small, valid inputs built byte by byte for the calculator's unit tests."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path
from typing import Final

from tdx_boot_attest.agent.measurement.tdvf import TABLE_FOOTER_GUID, TDX_METADATA_OFFSET_GUID

ASSETS: Final = Path(__file__).resolve().parents[2] / "assets" / "eventlog"
SETUP_SECTS: Final = 3
SETUP_BYTES: Final = (SETUP_SECTS + 1) * 512
PE_OFFSET: Final = 0x40
OPTIONAL_HEADER_BYTES: Final = 240  # PE32+ with 16 data-directory entries


def bzimage(
    *,
    payload: bytes = b"\x90" * 0x1800,
    protocol: int = 0x20F,
    xloadflags: int = 0x7F,
    initrd_addr_max: int = 0x7FFFFFFF,
    certificate: bytes = b"",
) -> bytes:
    """A PE32+ image that is also a Linux bzImage (setup header at 0x1F1), like vmlinuz.

    Two sections: ``.setup`` (the setup sectors after the first 512 bytes) and
    ``.text`` (``payload``). ``certificate`` is appended as an attribute certificate
    table with the data-directory entry pointing at it.
    """
    image = bytearray(SETUP_BYTES)
    image[0:2] = b"MZ"
    struct.pack_into("<I", image, 0x3C, PE_OFFSET)
    image[PE_OFFSET : PE_OFFSET + 4] = b"PE\x00\x00"
    coff = PE_OFFSET + 4
    struct.pack_into("<HHIIIHH", image, coff, 0x8664, 2, 0, 0, 0, OPTIONAL_HEADER_BYTES, 0x206)
    optional = coff + 20
    struct.pack_into("<H", image, optional, 0x20B)
    struct.pack_into("<I", image, optional + 56, SETUP_BYTES + len(payload))  # SizeOfImage
    struct.pack_into("<I", image, optional + 60, 0x200)  # SizeOfHeaders
    struct.pack_into("<I", image, optional + 64, 0x12345678)  # CheckSum
    struct.pack_into("<I", image, optional + 108, 16)  # NumberOfRvaAndSizes
    table = optional + OPTIONAL_HEADER_BYTES
    for number, (name, pointer, size) in enumerate(
        ((b".setup", 0x200, SETUP_BYTES - 0x200), (b".text", SETUP_BYTES, len(payload)))
    ):
        struct.pack_into(
            "<8sIIIIIIHHI", image, table + 40 * number, name, size, pointer, size, pointer,
            0, 0, 0, 0, 0x60000020,
        )  # fmt: skip
    image[0x1F1] = SETUP_SECTS
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, protocol)
    image[0x211] = 0x01  # LOADED_HIGH
    struct.pack_into("<I", image, 0x22C, initrd_addr_max)
    struct.pack_into("<H", image, 0x236, xloadflags)
    out = bytes(image) + payload
    if certificate:
        security = optional + 112 + 8 * 4
        patched = bytearray(out)
        struct.pack_into("<II", patched, security, len(out), len(certificate))
        out = bytes(patched) + certificate
    return out


def guid_entry(guid: uuid.UUID, data: bytes) -> bytes:
    """One entry of OVMF's GUIDed table: data, u16 length, GUID."""
    return data + struct.pack("<H", len(data) + 18) + guid.bytes_le


def tdvf_firmware(sections: list[tuple[int, int, int, int, int, int]], bfv: bytes) -> bytes:
    """A flash image with TDVF metadata: ``bfv`` at the start, then the descriptor, the
    GUIDed table and its footer at the end. Sections are the raw 6-tuples."""
    descriptor = struct.pack("<4sIII", b"TDVF", 16 + 32 * len(sections), 1, len(sections))
    descriptor += b"".join(struct.pack("<IIQQII", *section) for section in sections)
    body = bfv + descriptor
    table_entries = guid_entry(TDX_METADATA_OFFSET_GUID, b"\x00" * 4)
    tail_length = len(table_entries) + 18 + 32
    total = len(body) + tail_length
    offset_from_end = total - len(bfv)
    table_entries = guid_entry(TDX_METADATA_OFFSET_GUID, struct.pack("<I", offset_from_end))
    footer = struct.pack("<H", len(table_entries) + 18) + TABLE_FOOTER_GUID.bytes_le
    return body + table_entries + footer + b"\xff" * 32
