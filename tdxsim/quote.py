"""Building and signing simulated TDX quotes (v4, and v5 with a TDX 1.0 or 1.5 body).

The chain of evidence is the one a real platform produces: the attestation key signs
header + body; the TD quoting enclave's SGX report binds the attestation key
(REPORTDATA = SHA-256(attestation key || QE auth data) || zeros) and is signed by the PCK
key; the PCK certificate chain (leaf, platform CA, root) travels as certification data
type 5 inside type 6. No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec

from tdx_boot_attest.tdxsim import abi, keys
from tdx_boot_attest.tdxsim.errors import QuoteFormatError, QuoteVersionError
from tdx_boot_attest.tdxsim.pki import Identity
from tdx_boot_attest.tdxsim.profile import Profile
from tdx_boot_attest.tdxsim.qe import QE_AUTH_DATA, QuotingEnclave
from tdx_boot_attest.tdxsim.tcb import PlatformTcb

QUOTE_VERSIONS: Final = (4, 5)
# MRSIGNER_SEAM and SEAMATTRIBUTES of an Intel-signed TDX module are zero.
_MR_SIGNER_SEAM: Final = bytes(48)
_SEAM_ATTRIBUTES: Final = bytes(8)


@dataclass(frozen=True, slots=True)
class Signer:
    """The platform's signing parts: attestation key, PCK leaf and chain, and the QE."""

    attestation_key: ec.EllipticCurvePrivateKey
    pck: Identity
    pck_chain_pem: bytes
    qe: QuotingEnclave


def td_report(
    profile: Profile,
    report_data: bytes,
    platform: PlatformTcb,
    *,
    td15: bool = False,
    debug: bool = False,
) -> abi.TdReport:
    """The TD report a TD with ``profile`` on ``platform`` produces for ``report_data``.

    ``debug`` sets the DEBUG TD attribute. Raises QuoteFormatError when ``report_data`` is
    not 64 bytes.
    """
    if len(report_data) != 64:
        raise QuoteFormatError(f"REPORTDATA must be 64 bytes, got {len(report_data)}")
    tee_tcb_svn = (
        bytes.fromhex(profile.tee_tcb_svn)
        if profile.tee_tcb_svn is not None
        else platform.tee_tcb_svn
    )
    attributes = int.from_bytes(profile.measurement("td_attributes"), "little")
    if debug:
        attributes |= abi.TD_ATTRIBUTE_DEBUG
    return abi.TdReport(
        tee_tcb_svn=tee_tcb_svn,
        mr_seam=profile.measurement("mrseam"),
        mr_signer_seam=_MR_SIGNER_SEAM,
        seam_attributes=_SEAM_ATTRIBUTES,
        td_attributes=attributes.to_bytes(8, "little"),
        xfam=profile.measurement("xfam"),
        mr_td=profile.measurement("mrtd"),
        mr_config_id=profile.measurement("mrconfigid"),
        mr_owner=profile.measurement("mrowner"),
        mr_owner_config=profile.measurement("mrownerconfig"),
        rtmr0=profile.measurement("rtmr0"),
        rtmr1=profile.measurement("rtmr1"),
        rtmr2=profile.measurement("rtmr2"),
        rtmr3=profile.measurement("rtmr3"),
        report_data=report_data,
        tee_tcb_svn2=tee_tcb_svn if td15 else None,
        mr_service_td=bytes(48) if td15 else None,
    )


def header(version: int, qe: QuotingEnclave) -> abi.QuoteHeader:
    """A TDX quote header of ``version`` (4 or 5); raises QuoteVersionError otherwise."""
    if version not in QUOTE_VERSIONS:
        raise QuoteVersionError(f"quote version must be 4 or 5, got {version}")
    return abi.QuoteHeader(
        version=version,
        attestation_key_type=abi.ATTESTATION_KEY_ECDSA_P256,
        tee_type=abi.TEE_TYPE_TDX,
        qe_svn=0,
        pce_svn=0,
        qe_vendor_id=abi.INTEL_QE_VENDOR_ID,
        user_data=qe.qe_id + bytes(4),
    )


def certify_attestation_key(signer: Signer, cpusvn: bytes) -> abi.QeReportCertificationData:
    """What the QE attaches to every quote under the attestation key: its report over the
    key (signed with the PCK key) and the PCK certificate chain. A platform's QE makes it
    once per attestation key, not per quote. Raises nothing."""
    attestation_key = keys.raw_public_key(signer.attestation_key)
    qe_report = signer.qe.report(cpusvn, attestation_key, QE_AUTH_DATA)
    return abi.QeReportCertificationData(
        qe_report=qe_report,
        qe_report_signature=keys.sign_raw(signer.pck.key, qe_report.to_bytes()),
        qe_auth_data=QE_AUTH_DATA,
        # Intel's QE ends the PEM chain with a NUL byte; verifiers accept it.
        certification_data=abi.CertificationData(abi.CERT_PCK_CHAIN, signer.pck_chain_pem + b"\0"),
    )


def sign(
    report: abi.TdReport,
    version: int,
    signer: Signer,
    cpusvn: bytes,
    certification: abi.QeReportCertificationData | None = None,
) -> abi.Quote:
    """Assemble and sign a quote over ``report``; ``certification`` is the QE's
    certification of the attestation key (made here when not given).

    Raises QuoteVersionError for a version other than 4/5, or a TDX 1.5 body in a v4 quote.
    """
    if version == 4 and report.is_td15:
        raise QuoteVersionError("a TDX 1.5 body needs quote version 5")
    attestation_key = keys.raw_public_key(signer.attestation_key)
    qe_data = certification or certify_attestation_key(signer, cpusvn)
    unsigned = abi.Quote(
        header=header(version, signer.qe),
        body=report,
        signature_data=abi.SignatureData(bytes(64), attestation_key, qe_data),
    )
    signature = keys.sign_raw(signer.attestation_key, unsigned.signed_bytes())
    return abi.Quote(
        header=unsigned.header,
        body=report,
        signature_data=abi.SignatureData(signature, attestation_key, qe_data),
    )
