"""Authenticode digests: the fields it skips, the order it reads, malformed images."""

from __future__ import annotations

import contextlib
import hashlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tdx_boot_attest.agent.measurement.errors import MeasurementError, PeFormatError
from tdx_boot_attest.agent.measurement.pe import authenticode_digest, read_layout
from tests.agent.measurement.builders import OPTIONAL_HEADER_BYTES, PE_OFFSET, bzimage

OPTIONAL = PE_OFFSET + 24
CHECKSUM = OPTIONAL + 64
SECURITY_ENTRY = OPTIONAL + 112 + 8 * 4
SECTION_TABLE = OPTIONAL + OPTIONAL_HEADER_BYTES


def test_digest_is_the_spec_concatenation_of_headers_sections_and_trailer() -> None:
    image = bzimage(certificate=b"C" * 40)
    layout = read_layout(image)
    expected = hashlib.sha384(
        image[:CHECKSUM]
        + image[CHECKSUM + 4 : SECURITY_ENTRY]
        + image[SECURITY_ENTRY + 8 : 0x200]
        + image[0x200 : len(image) - 40]
    ).digest()
    assert layout.certificate_size == 40
    assert authenticode_digest(image) == expected
    assert (
        authenticode_digest(image, "sha256")
        == hashlib.sha256(
            image[:CHECKSUM]
            + image[CHECKSUM + 4 : SECURITY_ENTRY]
            + image[SECURITY_ENTRY + 8 : 0x200]
            + image[0x200 : len(image) - 40]
        ).digest()
    )


def test_signing_does_not_change_the_digest() -> None:
    unsigned = bzimage()
    signed = bzimage(certificate=b"\x30\x82" + b"S" * 126)
    patched_checksum = bytearray(signed)
    struct.pack_into("<I", patched_checksum, CHECKSUM, 0xDEADBEEF)
    assert authenticode_digest(unsigned) == authenticode_digest(signed)
    assert authenticode_digest(bytes(patched_checksum)) == authenticode_digest(unsigned)


def test_every_hashed_byte_counts() -> None:
    image = bzimage()
    for offset in (0x10, 0x1F1 + 20, 0x210, len(image) - 1):
        changed = bytearray(image)
        changed[offset] ^= 0xFF
        assert authenticode_digest(bytes(changed)) != authenticode_digest(image), offset


def test_sections_are_read_in_file_order_not_table_order() -> None:
    image = bytearray(bzimage())
    first = bytes(image[SECTION_TABLE : SECTION_TABLE + 40])
    second = bytes(image[SECTION_TABLE + 40 : SECTION_TABLE + 80])
    image[SECTION_TABLE : SECTION_TABLE + 80] = second + first
    assert read_layout(bytes(image)).sections == read_layout(bzimage()).sections
    # The section table itself is in the headers, so the digest differs only by it.
    assert authenticode_digest(bytes(image)) != authenticode_digest(bzimage())


def test_unknown_algorithm_is_refused() -> None:
    with pytest.raises(ValueError, match="algorithm"):
        authenticode_digest(bzimage(), "md5")


def _with(image: bytes, offset: int, fmt: str, *values: int) -> bytes:
    out = bytearray(image)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


@pytest.mark.parametrize(
    ("image", "words"),
    [
        (b"", "no MZ"),
        (b"ZM" + bytes(200), "no MZ"),
        (_with(bzimage(), 0x3C, "<I", 0xFFFFFF), "past the end"),
        (_with(bzimage(), PE_OFFSET, "<I", 0), "no PE signature"),
        (_with(bzimage(), OPTIONAL, "<H", 0x999), "neither PE32"),
        (_with(bzimage(), PE_OFFSET + 6, "<H", 500), "more than the 96"),
        (_with(bzimage(), PE_OFFSET + 20, "<H", 8), "too short"),
        (_with(bzimage(), OPTIONAL + 60, "<I", 0x10), "SizeOfHeaders"),
        (_with(bzimage(), SECTION_TABLE + 40 + 16, "<I", 0x7FFFFFFF), "passes the end"),
        (
            _with(bzimage(certificate=b"C" * 16), SECURITY_ENTRY + 4, "<I", 0x7FFFFFFF),
            "certificate table",
        ),
        (bzimage()[: SECTION_TABLE + 20], "SizeOfHeaders"),
    ],
)
def test_malformed_images_name_what_is_wrong(image: bytes, words: str) -> None:
    with pytest.raises(PeFormatError, match=words) as caught:
        authenticode_digest(image)
    assert caught.value.reason == "pe_malformed"
    assert isinstance(caught.value, ValueError)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes_never_escape_the_typed_error(data: bytes) -> None:
    with contextlib.suppress(PeFormatError):
        authenticode_digest(data)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(bzimage()) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=8,
    )
)
def test_fuzz_mutated_images_give_a_digest_or_the_typed_error(
    mutations: list[tuple[int, int]],
) -> None:
    image = bytearray(bzimage(certificate=b"C" * 16))
    for offset, value in mutations:
        image[offset] = value
    try:
        digest = authenticode_digest(bytes(image))
    except MeasurementError as exc:
        assert isinstance(exc, PeFormatError)
    else:
        assert len(digest) == 48
