"""tdxsim.abi on simulated quotes: fields land where the format says, and bad bytes are refused."""

from __future__ import annotations

import hashlib
import struct

import dcap_qvl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tdx_boot_attest.tdxsim import abi
from tdx_boot_attest.tdxsim.errors import NotTdxError, QuoteFormatError, QuoteVersionError
from tdx_boot_attest.tdxsim.profile import Profile
from tdx_boot_attest.tdxsim.state import SimState
from tests.tdxsim.conftest import REPORT_DATA

PROFILE = Profile.default().replace(
    mrconfigid="11" * 48, mrowner="22" * 48, mrownerconfig="33" * 48, rtmr3="44" * 48
)


@pytest.mark.parametrize(("version", "td15"), [(4, False), (5, False), (5, True)])
def test_simulated_quote_fields_match_dcap_qvl_parser(
    shared_state: SimState, version: int, td15: bool
) -> None:
    data = shared_state.make_quote(REPORT_DATA, PROFILE, version=version, td15=td15)

    parsed = abi.parse_tdx_quote(data)
    ref = dcap_qvl.parse_quote(data).report
    body = parsed.td_report

    assert parsed.to_bytes() == data
    assert parsed.trailing == b""
    assert body.report_data == REPORT_DATA == ref.report_data
    assert body.mr_td.hex() == PROFILE.mrtd == ref.mr_td.hex()
    assert [r.hex() for r in body.rtmrs] == list(PROFILE.rtmrs)
    assert [ref.rt_mr0, ref.rt_mr1, ref.rt_mr2, ref.rt_mr3] == list(body.rtmrs)
    assert (ref.mr_config_id, ref.mr_owner, ref.mr_owner_config) == (
        bytes([0x11]) * 48,
        bytes([0x22]) * 48,
        bytes([0x33]) * 48,
    )
    assert ref.mr_seam.hex() == PROFILE.mrseam
    assert ref.td_attributes.hex() == PROFILE.td_attributes
    assert ref.xfam.hex() == PROFILE.xfam
    assert body.is_td15 == td15


def test_qe_report_binds_attestation_key_and_auth_data(shared_state: SimState) -> None:
    parsed = abi.parse_tdx_quote(shared_state.make_quote(REPORT_DATA))
    qe = parsed.signature_data.qe

    expected = hashlib.sha256(parsed.signature_data.attestation_key + qe.qe_auth_data).digest()

    assert qe.qe_report.report_data == expected + bytes(32)
    assert qe.qe_auth_data == bytes(range(32))
    assert qe.qe_report.mr_signer == shared_state.qe.mrsigner
    assert (qe.qe_report.isv_prod_id, qe.qe_report.isv_svn) == (2, 4)
    assert qe.certification_data.cert_type == abi.CERT_PCK_CHAIN
    assert qe.certification_data.data.endswith(b"-----END CERTIFICATE-----\n\0")


def test_header_is_an_intel_tdx_ecdsa_header(shared_state: SimState) -> None:
    header = abi.parse_tdx_quote(shared_state.make_quote(REPORT_DATA)).header

    assert (header.version, header.attestation_key_type, header.tee_type) == (4, 2, 0x81)
    assert header.qe_vendor_id == abi.INTEL_QE_VENDOR_ID
    assert header.user_data[:16] == shared_state.qe.qe_id


def test_debug_sets_only_the_debug_attribute(shared_state: SimState) -> None:
    normal = abi.parse_tdx_quote(shared_state.make_quote(REPORT_DATA)).td_report
    debug = abi.parse_tdx_quote(shared_state.make_quote(REPORT_DATA, debug=True)).td_report

    assert not normal.debug
    assert debug.debug
    assert debug.attributes_value == normal.attributes_value | abi.TD_ATTRIBUTE_DEBUG


def test_trailing_bytes_are_kept(shared_state: SimState) -> None:
    data = shared_state.make_quote(REPORT_DATA) + bytes(70)

    parsed = abi.parse_tdx_quote(data)

    assert parsed.trailing == bytes(70)
    assert parsed.to_bytes() == data


@pytest.mark.parametrize("cut", [0, 10, 47, 48, 300, 632, 636, 700, 1000, 1300])
def test_truncated_quote_is_malformed(shared_state: SimState, cut: int) -> None:
    data = shared_state.make_quote(REPORT_DATA)[:cut]

    with pytest.raises(QuoteFormatError) as caught:
        abi.parse_quote(data)

    assert caught.value.reason in {"quote_malformed", "quote_version_unsupported"}


def _patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "error", "reason"),
    [
        (0, "<H", 6, QuoteVersionError, "quote_version_unsupported"),
        (0, "<H", 2, QuoteVersionError, "quote_version_unsupported"),
        (2, "<H", 3, QuoteVersionError, "quote_version_unsupported"),
        (4, "<I", 0x42, QuoteVersionError, "quote_version_unsupported"),
        (632, "<I", 99999, QuoteFormatError, "quote_malformed"),
        (632, "<I", 10, QuoteFormatError, "quote_malformed"),
        (764, "<H", 5, QuoteVersionError, "quote_version_unsupported"),
        (766, "<I", 100, QuoteFormatError, "quote_malformed"),
    ],
    ids=[
        "version-6",
        "version-2",
        "key-type-p384",
        "tee-type",
        "sig-data-too-long",
        "sig-data-too-short",
        "outer-cert-type-5",
        "outer-cert-size",
    ],
)
def test_bad_fields_are_refused_with_a_reason(
    shared_state: SimState,
    *,
    offset: int,
    fmt: str,
    value: int,
    error: type[Exception],
    reason: str,
) -> None:
    data = _patched(shared_state.make_quote(REPORT_DATA), offset, fmt, value)

    with pytest.raises(error) as caught:
        abi.parse_quote(data)

    assert getattr(caught.value, "reason", None) == reason


def test_v5_unknown_body_type_is_unsupported(shared_state: SimState) -> None:
    data = _patched(shared_state.make_quote(REPORT_DATA, version=5), 48, "<H", 9)

    with pytest.raises(QuoteVersionError):
        abi.parse_quote(data)


def test_v5_body_size_must_match_its_type(shared_state: SimState) -> None:
    data = _patched(shared_state.make_quote(REPORT_DATA, version=5), 50, "<I", 584)

    with pytest.raises(QuoteFormatError, match="must be 648 bytes"):
        abi.parse_quote(data)


def test_sgx_body_in_v4_is_not_tdx(shared_state: SimState) -> None:
    data = _patched(shared_state.make_quote(REPORT_DATA), 4, "<I", abi.TEE_TYPE_SGX)

    with pytest.raises((NotTdxError, QuoteFormatError)):
        abi.parse_tdx_quote(data)


def test_dataclasses_refuse_wrong_sizes() -> None:
    with pytest.raises(QuoteFormatError, match="user_data"):
        abi.QuoteHeader(4, 2, 0x81, 0, 0, bytes(16), bytes(19))
    with pytest.raises(QuoteFormatError, match="signature"):
        abi.SignatureData(bytes(63), bytes(64), None)  # type: ignore[arg-type]


_SAMPLE: dict[str, bytes] = {}


def _sample_quote() -> bytes:
    if "q" not in _SAMPLE:
        import tempfile

        from tests.tdxsim.conftest import fixed_clock

        with tempfile.TemporaryDirectory() as tmp:
            state = SimState.init(tmp, seed=5, clock=fixed_clock)
            _SAMPLE["q"] = state.make_quote(REPORT_DATA, version=5)
    return _SAMPLE["q"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.integers(0, 6000), st.integers(0, 255)), max_size=4),
       cut=st.integers(0, 6000))  # fmt: skip
def test_mutated_quotes_parse_exactly_or_raise_quote_format_error(
    edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(_sample_quote())
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
    mutated = bytes(data[:cut])

    try:
        parsed = abi.parse_quote(mutated)
    except QuoteFormatError:
        return
    assert parsed.to_bytes() == mutated


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash_the_parser(data: bytes) -> None:
    try:
        parsed = abi.parse_quote(data)
    except QuoteFormatError:
        return
    assert parsed.to_bytes() == data
