"""Simulated quotes against dcap-qvl: accepted, each TCB level's status, and every refusal."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

import pytest

from tdx_boot_attest.tdxsim import tcb
from tdx_boot_attest.tdxsim.abi import parse_tdx_quote
from tdx_boot_attest.tdxsim.state import SimState
from tests.support.dcap import refusal, verify
from tests.tdxsim.conftest import FIXED_NOW, FIXED_NOW_SECS, REPORT_DATA


@pytest.mark.parametrize(
    ("version", "td15", "body_type"),
    [(4, None, 2), (5, False, 2), (5, None, 3)],
    ids=["v4", "v5-tdx1.0", "v5-tdx1.5"],
)
def test_simulated_quote_verifies_up_to_date(
    shared_state: SimState, version: int, td15: bool | None, body_type: int
) -> None:
    quote = shared_state.make_quote(REPORT_DATA, version=version, td15=td15)
    parsed = parse_tdx_quote(quote)
    assert parsed.header.version == version
    assert parsed.body_type == body_type

    report = verify(quote, shared_state.collateral_json, shared_state.root_ca_der, FIXED_NOW_SECS)

    assert report.status == "UpToDate"
    assert report.advisory_ids == []


@pytest.mark.parametrize(
    ("preset", "status", "advisories"),
    [
        ("uptodate", "UpToDate", []),
        ("swhardening", "SWHardeningNeeded", ["INTEL-SA-01079"]),
        ("configneeded", "ConfigurationNeeded", ["INTEL-SA-01036"]),
        ("outofdate", "OutOfDate", ["INTEL-SA-00837", "INTEL-SA-00960"]),
    ],
)
@pytest.mark.parametrize("version", [4, 5])
def test_each_platform_tcb_lands_on_its_level(
    shared_state: SimState, preset: str, status: str, advisories: list[str], version: int
) -> None:
    quote = shared_state.make_quote(REPORT_DATA, version=version, platform_tcb=preset)

    report = verify(quote, shared_state.collateral_json, shared_state.root_ca_der, FIXED_NOW_SECS)

    assert (report.status, report.advisory_ids) == (status, advisories)


def test_revoked_tcb_level_is_refused(shared_state: SimState) -> None:
    quote = shared_state.make_quote(REPORT_DATA, platform_tcb="revoked")

    reason = refusal(quote, shared_state.collateral_json, shared_state.root_ca_der, FIXED_NOW_SECS)

    assert "Revoked" in reason


def test_platform_below_every_level_is_refused(shared_state: SimState) -> None:
    quote = shared_state.make_quote(REPORT_DATA, platform_tcb="unknown")

    reason = refusal(quote, shared_state.collateral_json, shared_state.root_ca_der, FIXED_NOW_SECS)

    assert "No matching TCB level" in reason


def test_revoked_pck_leaf_is_refused_and_others_still_verify(
    make_state: Callable[..., SimState],
) -> None:
    state = make_state()
    before = state.make_quote(REPORT_DATA)
    serial = state.revoke_pck()
    reloaded = SimState.load(state.path)

    reason = refusal(before, reloaded.collateral_json, reloaded.root_ca_der, FIXED_NOW_SECS)
    other = reloaded.make_quote(REPORT_DATA, platform_tcb="swhardening")
    report = verify(other, reloaded.collateral_json, reloaded.root_ca_der, FIXED_NOW_SECS)

    assert "CertRevoked" in reason
    assert serial == state.pki.pck_leaf("uptodate").serial
    assert report.status == "SWHardeningNeeded"


def test_unrevoked_pck_verifies_again(make_state: Callable[..., SimState]) -> None:
    state = make_state()
    state.revoke_pck()
    state.unrevoke_pck()

    report = verify(
        state.make_quote(REPORT_DATA), state.collateral_json, state.root_ca_der, FIXED_NOW_SECS
    )

    assert report.status == "UpToDate"


@pytest.mark.parametrize("which", ["pck_platform_ca", "tcb_signing"])
def test_revoked_intermediate_is_refused(make_state: Callable[..., SimState], which: str) -> None:
    state = make_state()
    state.revoke_ca(which)

    reason = refusal(
        state.make_quote(REPORT_DATA), state.collateral_json, state.root_ca_der, FIXED_NOW_SECS
    )

    assert "CertRevoked" in reason


def test_status_of_a_level_can_be_changed_by_reissuing(
    make_state: Callable[..., SimState],
) -> None:
    state = make_state()
    state.reissue_collateral(
        statuses={"uptodate": tcb.TcbStatus.OUT_OF_DATE},
        advisories={"uptodate": ("INTEL-SA-09999",)},
    )

    report = verify(
        state.make_quote(REPORT_DATA), state.collateral_json, state.root_ca_der, FIXED_NOW_SECS
    )

    assert (report.status, report.advisory_ids) == ("OutOfDate", ["INTEL-SA-09999"])


def test_level_revoked_by_reissue_is_refused(make_state: Callable[..., SimState]) -> None:
    state = make_state()
    state.reissue_collateral(statuses={"uptodate": tcb.TcbStatus.REVOKED})

    reason = refusal(
        state.make_quote(REPORT_DATA), state.collateral_json, state.root_ca_der, FIXED_NOW_SECS
    )

    assert "Revoked" in reason


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (-2 * 3600, "issue date is in the future"),
        (46 * 86400, "expired"),
    ],
    ids=["before-issue", "after-next-update"],
)
def test_collateral_outside_its_window_is_refused(
    shared_state: SimState, offset: int, expected: str
) -> None:
    quote = shared_state.make_quote(REPORT_DATA)

    reason = refusal(
        quote, shared_state.collateral_json, shared_state.root_ca_der, FIXED_NOW_SECS + offset
    )

    assert expected in reason.lower()


def test_reissued_dates_are_what_the_tester_chose(make_state: Callable[..., SimState]) -> None:
    state = make_state()
    issue = FIXED_NOW - dt.timedelta(days=100)
    expiry = FIXED_NOW - dt.timedelta(days=10)
    state.reissue_collateral(issue_date=issue, next_update=expiry)
    tcb_info = json.loads(json.loads(state.collateral_json)["tcb_info"])
    quote = state.make_quote(REPORT_DATA)

    now_reason = refusal(quote, state.collateral_json, state.root_ca_der, FIXED_NOW_SECS)
    then = verify(quote, state.collateral_json, state.root_ca_der, int(issue.timestamp()) + 60)

    assert (tcb_info["issueDate"], tcb_info["nextUpdate"]) == (
        "2025-11-21T12:00:00Z",
        "2026-02-19T12:00:00Z",
    )
    assert "expired" in now_reason.lower()
    assert then.status == "UpToDate"


def test_debug_td_is_refused_by_default_policy(shared_state: SimState) -> None:
    quote = shared_state.make_quote(REPORT_DATA, debug=True)

    reason = refusal(quote, shared_state.collateral_json, shared_state.root_ca_der, FIXED_NOW_SECS)

    assert parse_tdx_quote(quote).td_report.debug
    assert "Debug mode" in reason


def test_quote_is_refused_under_another_platforms_root(
    shared_state: SimState, make_state: Callable[..., SimState]
) -> None:
    other = make_state(seed=99)
    quote = shared_state.make_quote(REPORT_DATA)

    reason = refusal(quote, shared_state.collateral_json, other.root_ca_der, FIXED_NOW_SECS)

    assert reason


def test_quote_is_refused_under_the_real_intel_root(
    shared_state: SimState, vectors_dir: object
) -> None:
    from pathlib import Path

    intel_root = (Path(str(vectors_dir)) / "intel_sgx_root_ca.der").read_bytes()
    quote = shared_state.make_quote(REPORT_DATA)

    reason = refusal(quote, shared_state.collateral_json, intel_root, FIXED_NOW_SECS)

    assert reason


def _svns(*leading: int) -> bytes:
    return bytes(leading) + bytes(16 - len(leading))


@pytest.mark.parametrize(
    ("cpusvn", "pcesvn", "tee_tcb_svn", "status"),
    [
        (_svns(9, 9, 9, 9, 9, 9, 9, 9), 20, _svns(9, 1, 9), "UpToDate"),
        (_svns(4, 4, 2, 3, 1, 0, 5), 12, _svns(6, 1, 3), "ConfigurationNeeded"),
        (_svns(4, 4, 2, 3, 1, 0, 5), 13, _svns(6, 1, 2), "SWHardeningNeeded"),
        # Module SVN 3 is below TDX_01's UpToDate level (4): its OutOfDate level folds in.
        (_svns(4, 4, 2, 3, 1, 0, 5), 13, _svns(3, 1, 3), "OutOfDate"),
    ],
    ids=["above-all", "pcesvn-12", "microcode-2", "old-module"],
)
def test_custom_platform_tcb_picks_its_level(
    shared_state: SimState, cpusvn: bytes, pcesvn: int, tee_tcb_svn: bytes, status: str
) -> None:
    platform = tcb.PlatformTcb("custom", cpusvn, pcesvn, tee_tcb_svn)
    quote = shared_state.make_quote(REPORT_DATA, platform_tcb=platform)

    report = verify(quote, shared_state.collateral_json, shared_state.root_ca_der, FIXED_NOW_SECS)

    assert report.status == status
    assert parse_tdx_quote(quote).td_report.tee_tcb_svn == tee_tcb_svn


def test_profile_tee_tcb_svn_overrides_the_platform(shared_state: SimState) -> None:
    from tdx_boot_attest.tdxsim.profile import Profile

    profile = Profile.default().replace(tee_tcb_svn=_svns(6, 1, 2).hex())
    quote = shared_state.make_quote(REPORT_DATA, profile)

    report = verify(quote, shared_state.collateral_json, shared_state.root_ca_der, FIXED_NOW_SECS)

    assert report.status == "SWHardeningNeeded"


def test_custom_platform_pck_can_be_revoked(make_state: Callable[..., SimState]) -> None:
    state = make_state()
    platform = tcb.PlatformTcb("custom", _svns(7, 7, 7), 14, _svns(6, 1, 3))
    quote = state.make_quote(REPORT_DATA, platform_tcb=platform)

    state.revoke_pck(platform)

    assert state.make_quote(REPORT_DATA, platform_tcb=platform) == quote
    assert "CertRevoked" in refusal(quote, state.collateral_json, state.root_ca_der, FIXED_NOW_SECS)


def test_older_quoting_enclave_folds_in_its_qe_identity_status(shared_state: SimState) -> None:
    quote = shared_state.make_quote(REPORT_DATA, qe_isvsvn=3)

    report = verify(quote, shared_state.collateral_json, shared_state.root_ca_der, FIXED_NOW_SECS)

    assert (report.status, report.advisory_ids) == ("OutOfDate", ["INTEL-SA-00837"])


def test_quoting_enclave_below_every_qe_level_is_refused(shared_state: SimState) -> None:
    quote = shared_state.make_quote(REPORT_DATA, qe_isvsvn=1)

    reason = refusal(quote, shared_state.collateral_json, shared_state.root_ca_der, FIXED_NOW_SECS)

    assert "QE ISVSVN 1 is below minimum" in reason
