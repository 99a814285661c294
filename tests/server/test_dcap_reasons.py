"""Every class of dcap-qvl error maps to the reason that says what happened.

Each case is made by the simulator (a quote, a collateral set or a trust root that is
wrong in exactly one way) and verified by the server's own verify_dcap.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import dcap_qvl
import pytest

from tdx_boot_attest.agent import quote_layout as layout
from tdx_boot_attest.agent.protocol import Reason
from tdx_boot_attest.server.dcap import reason_for, verify_dcap
from tdx_boot_attest.server.errors import ServerError
from tdx_boot_attest.tdxsim import collateral as sim_collateral
from tdx_boot_attest.tdxsim.profile import Profile
from tdx_boot_attest.tdxsim.state import SimState

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
REPORT_DATA = bytes(range(64))
# Offsets in a v4 quote: header + TD report, then the signature data: the quote
# signature (4 + 64), the attestation key (64), certification data type and size (6),
# then the QE report and its signature (64).
SIGNATURE_DATA = layout.HEADER_BYTES + layout.TD_REPORT10_BYTES
ATTESTATION_KEY = SIGNATURE_DATA + 4 + 64
QE_REPORT = ATTESTATION_KEY + 64 + 6
QE_REPORT_SIGNATURE = QE_REPORT + layout.ENCLAVE_REPORT_BYTES
SEPT_VE_DISABLE = layout.TD_ATTRIBUTE_SEPT_VE_DISABLE


@dataclass
class Case:
    """What verify_dcap gets: a quote, collateral JSON, a trust root, a time."""

    quote: bytes
    collateral_json: str
    root_der: bytes
    now: dt.datetime = NOW


def _state(tmp_path: Path, seed: int = 1) -> SimState:
    return SimState.init(tmp_path / f"sim-{seed}", seed=seed, clock=lambda: NOW)


def _honest(sim: SimState, **quote_kw: object) -> Case:
    quote = sim.make_quote(REPORT_DATA, **quote_kw)  # type: ignore[arg-type]
    return Case(quote, sim.collateral_json, sim.root_ca_der)


def _flipped(quote: bytes, offset: int) -> bytes:
    changed = bytearray(quote)
    changed[offset] ^= 0x01
    return bytes(changed)


def _attributes(value: int) -> Profile:
    return Profile.default().replace(td_attributes=value.to_bytes(8, "little").hex())


def _default_attributes() -> int:
    return int.from_bytes(bytes.fromhex(Profile.default().td_attributes), "little")


def _with_signature_flipped(sim: SimState, field: str) -> str:
    document = json.loads(sim.collateral_json)
    signature = bytearray(bytes.fromhex(document[field]))
    signature[5] ^= 0x01
    document[field] = signature.hex()
    return json.dumps(document)


def _collateral_for_another_fmspc(sim: SimState) -> str:
    built = sim_collateral.build(
        sim.pki,
        sim.qe,
        fmspc=bytes.fromhex("00a06f000000"),
        params=sim.params,
        revoked_pck=sim.revoked_pck,
        revoked_ca=sim.revoked_ca,
    )
    return built.to_qvl_json()


def _quote_with_version(quote: bytes, version: int) -> bytes:
    return version.to_bytes(2, "little") + quote[2:]


def _case_qe_below_every_level(tmp_path: Path) -> Case:
    return _honest(_state(tmp_path), qe_isvsvn=1)


def _case_platform_below_every_level(tmp_path: Path) -> Case:
    return _honest(_state(tmp_path), platform_tcb="unknown")


def _case_revoked_tcb_level(tmp_path: Path) -> Case:
    return _honest(_state(tmp_path), platform_tcb="revoked")


def _case_foreign_quoting_enclave(tmp_path: Path) -> Case:
    sim = _state(tmp_path)
    sim.qe = replace(sim.qe, mrsigner=bytes(32))
    return _honest(sim)


def _case_debug(tmp_path: Path) -> Case:
    return _honest(_state(tmp_path), debug=True)


def _attribute_case(value: Callable[[int], int]) -> Callable[[Path], Case]:
    def make(tmp_path: Path) -> Case:
        sim = _state(tmp_path)
        quote = sim.make_quote(REPORT_DATA, _attributes(value(_default_attributes())))
        return Case(quote, sim.collateral_json, sim.root_ca_der)

    return make


def _case_revoked_pck(tmp_path: Path) -> Case:
    sim = _state(tmp_path)
    quote = sim.make_quote(REPORT_DATA)
    sim.revoke_pck()
    return Case(quote, sim.collateral_json, sim.root_ca_der)


def _case_truncated(tmp_path: Path) -> Case:
    case = _honest(_state(tmp_path))
    return replace(case, quote=case.quote[:700])


def _case_version(tmp_path: Path) -> Case:
    case = _honest(_state(tmp_path))
    return replace(case, quote=_quote_with_version(case.quote, 6))


def _case_unknown_qe_vendor(tmp_path: Path) -> Case:
    case = _honest(_state(tmp_path))
    return replace(case, quote=case.quote[:12] + bytes(16) + case.quote[28:])


def _case_td_report_signature(tmp_path: Path) -> Case:
    case = _honest(_state(tmp_path))
    return replace(case, quote=_flipped(case.quote, 520))


def _case_qe_report_signature(tmp_path: Path) -> Case:
    case = _honest(_state(tmp_path))
    return replace(case, quote=_flipped(case.quote, QE_REPORT_SIGNATURE + 10))


def _case_attestation_key(tmp_path: Path) -> Case:
    case = _honest(_state(tmp_path))
    return replace(case, quote=_flipped(case.quote, ATTESTATION_KEY + 5))


def _case_other_root(tmp_path: Path) -> Case:
    case = _honest(_state(tmp_path))
    return replace(case, root_der=_state(tmp_path, seed=2).root_ca_der)


def _case_quote_of_another_platform(tmp_path: Path) -> Case:
    case = _honest(_state(tmp_path))
    return replace(case, quote=_state(tmp_path, seed=2).make_quote(REPORT_DATA))


def _case_tcb_info_signature(tmp_path: Path) -> Case:
    sim = _state(tmp_path)
    return replace(_honest(sim), collateral_json=_with_signature_flipped(sim, "tcb_info_signature"))


def _case_qe_identity_signature(tmp_path: Path) -> Case:
    sim = _state(tmp_path)
    return replace(
        _honest(sim), collateral_json=_with_signature_flipped(sim, "qe_identity_signature")
    )


def _case_collateral_expired(tmp_path: Path) -> Case:
    return replace(_honest(_state(tmp_path)), now=NOW + dt.timedelta(days=400))


def _case_collateral_not_yet_valid(tmp_path: Path) -> Case:
    return replace(_honest(_state(tmp_path)), now=NOW - dt.timedelta(days=400))


def _case_collateral_of_another_fmspc(tmp_path: Path) -> Case:
    sim = _state(tmp_path)
    return replace(_honest(sim), collateral_json=_collateral_for_another_fmspc(sim))


CASES: dict[str, tuple[Callable[[Path], Case], Reason]] = {
    "qe_svn_below_every_qe_level": (_case_qe_below_every_level, Reason.TCB_STATUS_REJECTED),
    "platform_below_every_tcb_level": (
        _case_platform_below_every_level,
        Reason.TCB_STATUS_REJECTED,
    ),
    "revoked_tcb_level": (_case_revoked_tcb_level, Reason.TCB_STATUS_REJECTED),
    "foreign_quoting_enclave": (_case_foreign_quoting_enclave, Reason.TCB_STATUS_REJECTED),
    "debug": (_case_debug, Reason.DEBUG_TD),
    "no_sept_ve_disable": (
        _attribute_case(lambda a: a & ~SEPT_VE_DISABLE),
        Reason.TD_ATTRIBUTES_REJECTED,
    ),
    "migratable": (_attribute_case(lambda a: a | 1 << 29), Reason.TD_ATTRIBUTES_REJECTED),
    "profiling": (_attribute_case(lambda a: a | 1 << 4), Reason.TD_ATTRIBUTES_REJECTED),
    "reserved_bit": (_attribute_case(lambda a: a | 1 << 8), Reason.TD_ATTRIBUTES_REJECTED),
    "revoked_pck": (_case_revoked_pck, Reason.PCK_REVOKED),
    "truncated": (_case_truncated, Reason.QUOTE_MALFORMED),
    "unknown_qe_vendor": (_case_unknown_qe_vendor, Reason.QUOTE_MALFORMED),
    "version": (_case_version, Reason.QUOTE_VERSION_UNSUPPORTED),
    "td_report_signature": (_case_td_report_signature, Reason.QUOTE_SIGNATURE_INVALID),
    "qe_report_signature": (_case_qe_report_signature, Reason.QUOTE_SIGNATURE_INVALID),
    "attestation_key": (_case_attestation_key, Reason.QUOTE_SIGNATURE_INVALID),
    "other_trust_root": (_case_other_root, Reason.CERT_CHAIN_UNTRUSTED),
    "quote_of_another_platform": (_case_quote_of_another_platform, Reason.CERT_CHAIN_UNTRUSTED),
    "tcb_info_signature": (_case_tcb_info_signature, Reason.CERT_CHAIN_UNTRUSTED),
    "qe_identity_signature": (_case_qe_identity_signature, Reason.CERT_CHAIN_UNTRUSTED),
    "collateral_expired": (_case_collateral_expired, Reason.COLLATERAL_UNAVAILABLE),
    "collateral_not_yet_valid": (_case_collateral_not_yet_valid, Reason.COLLATERAL_UNAVAILABLE),
    "collateral_of_another_fmspc": (
        _case_collateral_of_another_fmspc,
        Reason.COLLATERAL_UNAVAILABLE,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_dcap_error_class_has_its_reason(tmp_path: Path, name: str) -> None:
    make, expected = CASES[name]
    case = make(tmp_path)
    collateral = dcap_qvl.QuoteCollateralV3.from_json(case.collateral_json)
    with pytest.raises(ServerError) as caught:
        verify_dcap(case.quote, collateral, case.root_der, case.now)
    assert caught.value.reason is expected, caught.value.message


def test_the_honest_case_verifies(tmp_path: Path) -> None:
    case = _honest(_state(tmp_path))
    collateral = dcap_qvl.QuoteCollateralV3.from_json(case.collateral_json)
    verdict = verify_dcap(case.quote, collateral, case.root_der, case.now)
    assert verdict.tcb_status == "UpToDate"


def test_an_unknown_message_is_still_a_refusal_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert reason_for("Verification failed: something new") is Reason.QUOTE_SIGNATURE_INVALID
    assert "something new" in caplog.text
