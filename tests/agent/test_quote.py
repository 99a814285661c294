"""agent.quote: reading a quote's header and TD report body; arbitrary and mutated
bytes give a summary or QuoteFormatError."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tdx_boot_attest.agent.quote import QuoteFormatError, parse_quote
from tests.agent.conftest import MRTD, synthetic_quote


@pytest.mark.parametrize("version", [4, 5])
def test_parse_quote_reads_the_td_report(version: int) -> None:
    report_data = bytes(range(64))
    summary = parse_quote(synthetic_quote(report_data, version=version, td_attributes=1))
    assert summary.version == version
    assert summary.report_data == report_data
    assert summary.fields["mrtd"] == MRTD
    assert summary.fields["rtmr2"] == bytes([0x12]) * 48
    assert summary.debug is True
    assert summary.as_hex()["mrtd"] == MRTD.hex()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda q: q[:100], "at least 632 bytes"),
        (lambda q: struct.pack("<H", 3) + q[2:], "version 3"),
        (lambda q: q[:4] + struct.pack("<I", 0) + q[8:], "not TDX"),
    ],
)
def test_parse_quote_refuses_other_shapes(mutate: object, message: str) -> None:
    quote = synthetic_quote(bytes(64))
    with pytest.raises(QuoteFormatError, match=message):
        parse_quote(mutate(quote))  # type: ignore[operator]


def test_parse_quote_v5_with_a_foreign_body() -> None:
    quote = bytearray(synthetic_quote(bytes(64), version=5))
    quote[48:50] = struct.pack("<H", 1)
    with pytest.raises(QuoteFormatError, match="not TDX"):
        parse_quote(bytes(quote))


REPORT_DATA = bytes(range(64))
SAMPLES = {4: synthetic_quote(REPORT_DATA, version=4), 5: synthetic_quote(REPORT_DATA, version=5)}


def check(data: bytes) -> None:
    """Parse ``data``: what parses carries 64 bytes of REPORTDATA; anything else is typed."""
    try:
        summary = parse_quote(data)
    except QuoteFormatError as exc:
        assert str(exc)
        return
    assert summary.version in (4, 5)
    assert len(summary.report_data) == 64


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(version=st.sampled_from([4, 5]),
       edits=st.lists(st.tuples(st.integers(0, 700), st.integers(0, 255)), max_size=4),
       cut=st.integers(0, 700))  # fmt: skip
def test_mutated_quotes_parse_or_raise_quote_format_error(
    version: int, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(SAMPLES[version])
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
    check(bytes(data[:cut]))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash_the_parser(data: bytes) -> None:
    check(data)


def test_the_samples_parse() -> None:
    for version, sample in SAMPLES.items():
        assert parse_quote(sample).version == version
