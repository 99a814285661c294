"""agent.quote_layout against Intel's published layout (TDX DCAP Quoting Library API)."""

from __future__ import annotations

import itertools

import pytest

from tdx_boot_attest.agent import quote_layout as layout


def test_td_report_fields_are_contiguous_and_fill_the_body() -> None:
    fields = layout.TD_REPORT10_FIELDS + layout.TD_REPORT15_EXTRA_FIELDS
    assert fields[0].offset == 0
    for before, after in itertools.pairwise(fields):
        assert before.end == after.offset, (before, after)
    assert layout.TD_REPORT10_FIELDS[-1].end == layout.TD_REPORT10_BYTES == 584
    assert fields[-1].end == layout.TD_REPORT15_BYTES == 648


def test_header_fields_are_contiguous_and_fill_the_header() -> None:
    header = (
        layout.HEADER_VERSION,
        layout.HEADER_ATTESTATION_KEY_TYPE,
        layout.HEADER_TEE_TYPE,
        layout.HEADER_QE_SVN,
        layout.HEADER_PCE_SVN,
        layout.HEADER_QE_VENDOR_ID,
        layout.HEADER_USER_DATA,
    )
    assert header[0].offset == 0
    for before, after in itertools.pairwise(header):
        assert before.end == after.offset, (before, after)
    assert header[-1].end == layout.HEADER_BYTES == 48


def test_published_offsets() -> None:
    # REPORTDATA at absolute offset 568 of a v4 quote (docs/protocol.md), MRTD at 184.
    assert layout.body_offset(4) + layout.TD_REPORT_FIELD["report_data"].offset == 568
    assert layout.body_offset(4) + layout.TD_REPORT_FIELD["mrtd"].offset == 184
    assert layout.body_offset(5) == 54
    assert layout.TEE_TYPE_TDX == 0x81
    assert layout.BODY_BYTES == {1: 384, 2: 584, 3: 648}


def test_body_offset_of_another_version_is_an_error() -> None:
    with pytest.raises(ValueError, match="version 3"):
        layout.body_offset(3)
