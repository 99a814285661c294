"""Collateral: Intel's TCB info / QE identity shapes, signatures over the exact text, dates."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

import dcap_qvl
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tdx_boot_attest.tdxsim import collateral, tcb
from tdx_boot_attest.tdxsim.errors import CollateralError
from tdx_boot_attest.tdxsim.state import SimState
from tests.support.dcap import verify
from tests.tdxsim.conftest import FIXED_NOW


def _doc(state: SimState) -> dict[str, str]:
    data: dict[str, str] = json.loads(state.collateral_json)
    return data


def test_collateral_json_has_the_quote_collateral_v3_layout(shared_state: SimState) -> None:
    doc = _doc(shared_state)
    parsed = dcap_qvl.QuoteCollateralV3.from_json(shared_state.collateral_json)

    assert set(doc) == {
        "pck_crl_issuer_chain", "root_ca_crl", "pck_crl", "tcb_info_issuer_chain", "tcb_info",
        "tcb_info_signature", "qe_identity_issuer_chain", "qe_identity", "qe_identity_signature",
    }  # fmt: skip
    assert parsed.tcb_info == doc["tcb_info"]
    assert parsed.pck_crl == bytes.fromhex(doc["pck_crl"])
    assert doc["pck_crl_issuer_chain"].count("BEGIN CERTIFICATE") == 2
    assert doc["tcb_info_issuer_chain"].count("BEGIN CERTIFICATE") == 2
    assert (shared_state.path / "collateral.json").read_text() == shared_state.collateral_json


def test_tcb_info_is_tdx_v3_with_every_status(shared_state: SimState) -> None:
    info = json.loads(_doc(shared_state)["tcb_info"])

    assert (info["id"], info["version"], info["tcbType"], info["pceId"]) == ("TDX", 3, 0, "0000")
    assert info["fmspc"] == shared_state.fmspc.hex().upper()
    assert info["tcbEvaluationDataNumber"] == 17
    assert info["tdxModule"]["mrsigner"] == "00" * 48
    assert {m["id"] for m in info["tdxModuleIdentities"]} == {"TDX_01", "TDX_03"}
    statuses = [level["tcbStatus"] for level in info["tcbLevels"]]
    assert statuses == [
        "UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "OutOfDate", "Revoked",
    ]  # fmt: skip
    for level in info["tcbLevels"]:
        assert len(level["tcb"]["sgxtcbcomponents"]) == 16
        assert len(level["tcb"]["tdxtcbcomponents"]) == 16
        assert isinstance(level["tcb"]["pcesvn"], int)
        assert ("advisoryIDs" in level) == (level["tcbStatus"] != "UpToDate")


def test_qe_identity_matches_the_simulated_qe(shared_state: SimState) -> None:
    identity = json.loads(_doc(shared_state)["qe_identity"])

    assert (identity["id"], identity["version"]) == ("TD_QE", 2)
    assert identity["mrsigner"] == shared_state.qe.mrsigner.hex().upper()
    assert identity["isvprodid"] == shared_state.qe.isvprodid
    assert identity["tcbLevels"][0]["tcb"]["isvsvn"] == shared_state.qe.isvsvn


@pytest.mark.parametrize(
    ("text", "signature"),
    [("tcb_info", "tcb_info_signature"), ("qe_identity", "qe_identity_signature")],
)
def test_signature_is_raw_r_s_over_the_exact_text(
    shared_state: SimState, text: str, signature: str
) -> None:
    doc = _doc(shared_state)
    raw = bytes.fromhex(doc[signature])
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    der_sig = encode_dss_signature(r, s)
    key = shared_state.pki.tcb_signing.certificate.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)

    key.verify(der_sig, doc[text].encode(), ec.ECDSA(hashes.SHA256()))

    assert len(raw) == 64
    assert ", " not in doc[text]
    assert '": ' not in doc[text]


def test_fresh_state_collateral_is_valid_from_now_for_30_days(tmp_path: object) -> None:
    from pathlib import Path

    state = SimState.init(Path(str(tmp_path)) / "real-clock")
    quote = state.make_quote(bytes(64))
    now = int(dt.datetime.now(dt.UTC).timestamp())

    for offset_days in (0, 15, 30):
        report = verify(quote, state.collateral_json, state.root_ca_der, now + offset_days * 86400)
        assert report.status == "UpToDate"


def test_params_survive_a_reload(make_state: Callable[..., SimState]) -> None:
    state = make_state()
    state.reissue_collateral(
        issue_date=FIXED_NOW - dt.timedelta(days=1),
        validity=dt.timedelta(days=3),
        statuses={"swhardening": tcb.TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED},
        tcb_evaluation_data_number=19,
    )

    reloaded = SimState.load(state.path)

    assert reloaded.params == state.params
    assert reloaded.collateral_json == state.collateral_json
    assert reloaded.params.crl_number == 2
    assert reloaded.params.next_update == FIXED_NOW + dt.timedelta(days=2)


def test_collateral_round_trips_through_its_json(shared_state: SimState) -> None:
    parsed = collateral.Collateral.from_qvl_json(shared_state.collateral_json)

    assert parsed.to_qvl_json() == shared_state.collateral_json


@pytest.mark.parametrize(
    "change",
    [
        {"next_update": FIXED_NOW - dt.timedelta(days=400)},
        {"statuses": {"nosuchlevel": tcb.TcbStatus.REVOKED}},
        {"advisories": {"nosuchlevel": ("X",)}},
    ],
)
def test_inconsistent_reissue_is_refused(
    make_state: Callable[..., SimState], change: dict[str, object]
) -> None:
    state = make_state()

    with pytest.raises(CollateralError):
        state.reissue_collateral(**change)  # type: ignore[arg-type]


def test_unknown_status_name_is_refused() -> None:
    with pytest.raises(CollateralError, match="unknown TCB status"):
        tcb.parse_status("Fine")


def test_naive_and_offset_times_are_read_as_utc() -> None:
    assert collateral.parse_time("2026-01-02T03:04:05") == dt.datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC
    )
    assert collateral.format_time(collateral.parse_time("2026-01-02T05:04:05+02:00")) == (
        "2026-01-02T03:04:05Z"
    )
    with pytest.raises(CollateralError):
        collateral.parse_time("yesterday")


def test_init_refuses_bad_parameters_before_writing(tmp_path: object) -> None:
    from pathlib import Path

    from tdx_boot_attest.tdxsim.errors import PkiError

    target = Path(str(tmp_path)) / "bad"
    with pytest.raises(CollateralError, match="unknown platform TCB"):
        SimState.init(target, platform_tcb="nosuch")
    with pytest.raises(CollateralError, match="after issueDate"):
        SimState.init(target, validity=dt.timedelta(hours=-2))
    assert not target.exists()
    with pytest.raises(PkiError, match="FMSPC"):
        SimState.init(target, fmspc=b"\0")
