"""The real DCAP vectors: dcap-qvl's verdicts, and what tdxsim.abi reads from them."""

from __future__ import annotations

import re
from pathlib import Path

import dcap_qvl
import pytest

from tdx_boot_attest.tdxsim import abi
from tdx_boot_attest.tdxsim.errors import NotTdxError
from tdx_boot_attest.tdxsim.state import SimState

TDX_WINDOW = (1750329147, 1752919235)
OUTDATED_WINDOW = (1771412331, 1774003275)
SGX_WINDOW = (1750330571, 1752919279)


def _verify(vectors: Path, name: str, now: int) -> dcap_qvl.VerifiedReport:
    quote = (vectors / name).read_bytes()
    collateral = dcap_qvl.QuoteCollateralV3.from_json(
        (vectors / f"{name}_collateral.json").read_text()
    )
    root = (vectors / "intel_sgx_root_ca.der").read_bytes()
    return dcap_qvl.verify_with_root_ca(quote, collateral, root, now)


@pytest.mark.parametrize("now", [TDX_WINDOW[0], (TDX_WINDOW[0] + TDX_WINDOW[1]) // 2])
def test_real_tdx_quote_is_up_to_date_inside_its_window(vectors_dir: Path, now: int) -> None:
    report = _verify(vectors_dir, "tdx_quote", now)

    assert report.status == "UpToDate"
    assert report.advisory_ids == []


@pytest.mark.parametrize("now", [TDX_WINDOW[0] - 3600, TDX_WINDOW[1] + 3600])
def test_real_tdx_quote_is_refused_outside_its_window(vectors_dir: Path, now: int) -> None:
    with pytest.raises(ValueError, match=r"(?i)expired|future"):
        _verify(vectors_dir, "tdx_quote", now)


def test_real_outdated_v5_quote_has_no_matching_tcb_level(vectors_dir: Path) -> None:
    with pytest.raises(ValueError, match="No matching TCB level"):
        _verify(vectors_dir, "tdx_quote_outdated", OUTDATED_WINDOW[0] + 60)


def test_real_sgx_quote_status_and_advisories(vectors_dir: Path) -> None:
    report = _verify(vectors_dir, "sgx_quote", SGX_WINDOW[0] + 60)

    assert report.status == "ConfigurationAndSWHardeningNeeded"
    assert sorted(report.advisory_ids) == ["INTEL-SA-00289", "INTEL-SA-00615"]


def test_parser_says_sgx_quote_is_not_tdx(vectors_dir: Path) -> None:
    data = (vectors_dir / "sgx_quote").read_bytes()

    parsed = abi.parse_quote(data)
    with pytest.raises(NotTdxError) as caught:
        abi.parse_tdx_quote(data)

    assert parsed.header.version == 3
    assert not parsed.is_tdx
    assert caught.value.reason == "not_tdx"
    assert parsed.to_bytes() == data


def test_real_tdx_quote_round_trips_byte_for_byte(vectors_dir: Path) -> None:
    data = (vectors_dir / "tdx_quote").read_bytes()

    parsed = abi.parse_tdx_quote(data)

    assert parsed.to_bytes() == data
    assert len(data) == 5006
    assert parsed.trailing == bytes(5006 - 4936)
    assert parsed.signature_data.qe.pck_chain_pem().count(b"BEGIN CERTIFICATE") == 3


def test_real_v5_quote_round_trips_with_a_tdx15_body(vectors_dir: Path) -> None:
    data = (vectors_dir / "tdx_quote_outdated").read_bytes()

    parsed = abi.parse_tdx_quote(data)
    reference = dcap_qvl.parse_quote(data).report

    assert parsed.to_bytes() == data
    assert (parsed.header.version, parsed.body_type) == (5, abi.BODY_TD_REPORT15)
    assert parsed.td_report.tee_tcb_svn2 == reference.tee_tcb_svn2
    assert parsed.td_report.mr_service_td == reference.mr_service_td
    assert parsed.td_report.mr_td == reference.mr_td


_README_FIELDS = {
    "mr_td": "mr_td",
    "rt_mr0": "rtmr0",
    "rt_mr1": "rtmr1",
    "rt_mr2": "rtmr2",
    "td_attributes": "td_attributes",
    "report_data": "report_data",
}


def test_measurements_listed_in_the_vectors_readme_are_what_abi_reads(vectors_dir: Path) -> None:
    readme = (vectors_dir / "README.md").read_text()
    listed = dict(re.findall(r"^- (\w+) `([0-9a-f]+)`", readme, flags=re.MULTILINE))
    body = abi.parse_tdx_quote((vectors_dir / "tdx_quote").read_bytes()).td_report

    read = {name: getattr(body, attr).hex() for name, attr in _README_FIELDS.items()}

    assert set(_README_FIELDS) <= set(listed)
    assert read == {name: listed[name] for name in _README_FIELDS}
    assert body.rtmr3 == bytes(48)  # "rt_mr3 all zero"
    assert not body.debug


def test_layout_offsets_in_the_vectors_readme_match_the_parser(vectors_dir: Path) -> None:
    data = (vectors_dir / "tdx_quote").read_bytes()
    parsed = abi.parse_tdx_quote(data)
    qe = parsed.signature_data.qe

    assert data[184 : 184 + 48] == parsed.td_report.mr_td
    assert data[568 : 568 + 64] == parsed.td_report.report_data
    assert data[636:700] == parsed.signature_data.signature
    assert data[700:764] == parsed.signature_data.attestation_key
    assert data[770:1154] == qe.qe_report.to_bytes()
    assert data[1154:1218] == qe.qe_report_signature
    assert data[1258:4936] == qe.pck_chain_pem()


def test_quote_from_tappd_hex_parses(vectors_dir: Path) -> None:
    text = (vectors_dir / "quote-from-tappd.hex").read_text().strip().removeprefix("0x")
    data = bytes.fromhex(text)

    parsed = abi.parse_tdx_quote(data)

    assert parsed.to_bytes() == data
    assert parsed.td_report.mr_td == dcap_qvl.parse_quote(data).report.mr_td


def test_real_tdx_quote_is_refused_under_a_simulated_root(
    vectors_dir: Path, shared_state: SimState
) -> None:
    quote = (vectors_dir / "tdx_quote").read_bytes()
    collateral = dcap_qvl.QuoteCollateralV3.from_json(
        (vectors_dir / "tdx_quote_collateral.json").read_text()
    )

    with pytest.raises(ValueError, match=r"(?i)root|chain|issuer|signature"):
        dcap_qvl.verify_with_root_ca(quote, collateral, shared_state.root_ca_der, TDX_WINDOW[0])
