"""The Authenticode digest of a PE/COFF image (what UEFI firmware measures for an image).

Microsoft's "Windows Authenticode Portable Executable Signature Format" hashes, in order:

1. the headers up to ``SizeOfHeaders`` without the optional header's ``CheckSum`` field
   and without the Certificate Table entry of the data directory;
2. every section with raw data, in ascending ``PointerToRawData`` order,
   ``SizeOfRawData`` bytes each;
3. whatever follows the last section, minus the attribute certificate table
   (``file size - bytes hashed so far - certificate table size``).

This is the order EDK II's ``MeasurePeImageAndExtend`` (OVMF, TDVF) follows, so the SHA-384
result is the digest of an EV_EFI_BOOT_SERVICES_APPLICATION event. No padding is added
(a signed image is already 8-byte aligned; an unsigned one is hashed as it is, like the
firmware does). Work is bounded: at most MAX_SECTIONS section headers are read and
every range is checked against the file before hashing; hashing uses memoryviews.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Final

from tdx_boot_attest.agent.measurement.errors import PeFormatError

MAX_SECTIONS: Final = 96  # the PE/COFF specification's limit for an image
MZ: Final = b"MZ"
PE_SIGNATURE: Final = b"PE\x00\x00"
PE32_MAGIC: Final = 0x10B
PE32_PLUS_MAGIC: Final = 0x20B
_COFF: Final = struct.Struct("<HHIIIHH")
_SECTION: Final = struct.Struct("<8sIIIIIIHHI")
_DATA_DIRECTORY_SECURITY: Final = 4
ALGORITHMS: Final = ("sha256", "sha384")


@dataclass(frozen=True, slots=True)
class PeLayout:
    """Where the Authenticode hash skips and reads, computed from the headers."""

    checksum_offset: int
    security_entry_offset: int | None  # None when the directory has no security entry
    size_of_headers: int
    sections: tuple[tuple[int, int], ...]  # (PointerToRawData, SizeOfRawData), sorted
    certificate_size: int


def read_layout(image: bytes | memoryview) -> PeLayout:
    """The hashing layout of ``image``. Raises PeFormatError naming the bad field."""
    view = memoryview(image)
    size = len(view)
    if size < 0x40 or bytes(view[:2]) != MZ:
        raise PeFormatError("not a PE image: no MZ header")
    (pe_offset,) = struct.unpack_from("<I", view, 0x3C)
    if pe_offset + 4 + _COFF.size > size:
        raise PeFormatError(f"PE header offset {pe_offset:#x} is past the end of the file")
    if bytes(view[pe_offset : pe_offset + 4]) != PE_SIGNATURE:
        raise PeFormatError(f"no PE signature at offset {pe_offset:#x}")
    coff = pe_offset + 4
    _machine, section_count, _t, _p, _s, optional_size, _c = _COFF.unpack_from(view, coff)
    if section_count > MAX_SECTIONS:
        raise PeFormatError(f"{section_count} sections, more than the {MAX_SECTIONS} allowed")
    optional = coff + _COFF.size
    if optional + optional_size > size or optional_size < 2:
        raise PeFormatError("the optional header is truncated")
    (magic,) = struct.unpack_from("<H", view, optional)
    if magic == PE32_MAGIC:
        directory_count_at, directories_at = 92, 96
    elif magic == PE32_PLUS_MAGIC:
        directory_count_at, directories_at = 108, 112
    else:
        raise PeFormatError(f"optional header magic {magic:#x} is neither PE32 nor PE32+")
    if optional_size < directories_at:
        raise PeFormatError("the optional header is too short for its data directory")
    (size_of_headers,) = struct.unpack_from("<I", view, optional + 60)
    (directory_count,) = struct.unpack_from("<I", view, optional + directory_count_at)
    checksum_offset = optional + 64
    security_entry: int | None = None
    certificate_size = 0
    if directory_count > _DATA_DIRECTORY_SECURITY:
        security_entry = optional + directories_at + 8 * _DATA_DIRECTORY_SECURITY
        if security_entry + 8 > optional + optional_size:
            raise PeFormatError("the data directory is longer than the optional header")
        (certificate_size,) = struct.unpack_from("<I", view, security_entry + 4)
    first_skip_end = (security_entry + 8) if security_entry is not None else checksum_offset + 4
    if not first_skip_end <= size_of_headers <= size:
        raise PeFormatError(
            f"SizeOfHeaders {size_of_headers:#x} does not cover the headers or passes the file end"
        )
    table = optional + optional_size
    if table + section_count * _SECTION.size > size:
        raise PeFormatError("the section table is truncated")
    sections: list[tuple[int, int]] = []
    for number in range(section_count):
        fields = _SECTION.unpack_from(view, table + number * _SECTION.size)
        raw_size, raw_pointer = fields[3], fields[4]
        if raw_size == 0:
            continue
        if raw_pointer + raw_size > size:
            name = fields[0].rstrip(b"\x00").decode("ascii", errors="replace")
            raise PeFormatError(
                f"section {number} ({name!r}) raw data {raw_pointer:#x}+{raw_size:#x} "
                f"passes the end of the {size}-byte file"
            )
        sections.append((raw_pointer, raw_size))
    sections.sort()
    hashed = size_of_headers + sum(length for _, length in sections)
    if hashed < size and size - hashed < certificate_size:
        raise PeFormatError(
            f"the certificate table ({certificate_size} bytes) is larger than the data "
            "after the last section"
        )
    return PeLayout(
        checksum_offset=checksum_offset,
        security_entry_offset=security_entry,
        size_of_headers=size_of_headers,
        sections=tuple(sections),
        certificate_size=certificate_size,
    )


def authenticode_digest(image: bytes | memoryview, algorithm: str = "sha384") -> bytes:
    """The Authenticode digest of ``image`` with ``algorithm`` (``sha384`` or ``sha256``).

    Raises PeFormatError for a malformed image and ValueError for another algorithm.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
    view = memoryview(image)
    layout = read_layout(view)
    digest = hashlib.new(algorithm)
    digest.update(view[: layout.checksum_offset])
    if layout.security_entry_offset is None:
        digest.update(view[layout.checksum_offset + 4 : layout.size_of_headers])
    else:
        digest.update(view[layout.checksum_offset + 4 : layout.security_entry_offset])
        digest.update(view[layout.security_entry_offset + 8 : layout.size_of_headers])
    hashed = layout.size_of_headers
    for pointer, length in layout.sections:
        digest.update(view[pointer : pointer + length])
        hashed += length
    if len(view) > hashed:
        digest.update(view[hashed : len(view) - layout.certificate_size])
    return digest.digest()
