"""DCAP verification with dcap-qvl, its errors mapped to stable reasons."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import dcap_qvl

from tdx_boot_attest.agent.protocol import Reason
from tdx_boot_attest.server.errors import AttestationRefused, CollateralUnavailable, RequestInvalid

LOG = logging.getLogger("tdx_attest.dcap")

# dcap-qvl reports every failure as ValueError with a message (its error chain, one cause a
# line); these fragments (lowercase) select the reason. The first match wins, so a
# fragment comes before any shorter one it contains ("tcb status is invalid: revoked"
# before "revoked", "unsupported quote version" before "failed to decode quote").
_MESSAGE_REASONS: tuple[tuple[str, Reason], ...] = (
    # The TD's attributes: DEBUG has its own reason, every other refused bit shares one.
    ("debug mode is enabled", Reason.DEBUG_TD),
    ("sept_ve_disable is not enabled", Reason.TD_ATTRIBUTES_REJECTED),
    ("td migration is enabled", Reason.TD_ATTRIBUTES_REJECTED),
    ("td profiling is enabled", Reason.TD_ATTRIBUTES_REJECTED),
    ("servtd_ext is enabled", Reason.TD_ATTRIBUTES_REJECTED),
    ("reserved bits in td attributes", Reason.TD_ATTRIBUTES_REJECTED),
    ("failed to parse td attributes", Reason.TD_ATTRIBUTES_REJECTED),
    ("invalid mr service td", Reason.TD_ATTRIBUTES_REJECTED),
    # TCB evaluation: the platform, its TDX module or its quoting enclave is not at an
    # allowed (or any known) level of Intel's signed TCB info and QE identity.
    ("tcb status is invalid", Reason.TCB_STATUS_REJECTED),
    ("no matching tcb level", Reason.TCB_STATUS_REJECTED),
    ("unknown tcb status", Reason.TCB_STATUS_REJECTED),
    ("qe isvsvn", Reason.TCB_STATUS_REJECTED),
    ("qe tcb too old", Reason.TCB_STATUS_REJECTED),
    ("no tcb levels found in qe identity", Reason.TCB_STATUS_REJECTED),
    ("qe mrsigner mismatch", Reason.TCB_STATUS_REJECTED),
    ("qe attributes mismatch", Reason.TCB_STATUS_REJECTED),
    ("qe report validation failed", Reason.TCB_STATUS_REJECTED),
    ("tdx module", Reason.TCB_STATUS_REJECTED),
    ("current tdx tcb", Reason.TCB_STATUS_REJECTED),
    ("not allowed by policy", Reason.TCB_STATUS_REJECTED),
    # Revocation of a certificate of the PCK chain.
    ("certrevoked", Reason.PCK_REVOKED),
    ("certificate is revoked", Reason.PCK_REVOKED),
    # The quote's own encoding.
    ("unsupported quote version", Reason.QUOTE_VERSION_UNSUPPORTED),
    ("unsupported dcap quote version", Reason.QUOTE_VERSION_UNSUPPORTED),
    ("must have version", Reason.QUOTE_VERSION_UNSUPPORTED),
    ("invalid tee type", Reason.NOT_TDX),
    ("unsupported tee type", Reason.NOT_TDX),
    ("sgx quote with", Reason.NOT_TDX),
    ("failed to decode quote", Reason.QUOTE_MALFORMED),
    ("failed to parse quote", Reason.QUOTE_MALFORMED),
    ("not enough data", Reason.QUOTE_MALFORMED),
    ("unknown qe vendor id", Reason.QUOTE_MALFORMED),
    ("unsupported dcap attestation key type", Reason.QUOTE_MALFORMED),
    ("invalid qe auth data length", Reason.QUOTE_MALFORMED),
    ("unsupported dcap pck cert format", Reason.QUOTE_MALFORMED),
    ("unsupported cert type", Reason.QUOTE_MALFORMED),
    ("data length exceeds", Reason.QUOTE_MALFORMED),
    # Certificates of the chain outside their validity.
    ("certexpired", Reason.CERT_CHAIN_UNTRUSTED),
    ("certnotvalidyet", Reason.CERT_CHAIN_UNTRUSTED),
    # Collateral not usable for this quote now: expired, not yet valid, another platform's.
    ("crlexpired", Reason.COLLATERAL_UNAVAILABLE),
    ("issue date is in the future", Reason.COLLATERAL_UNAVAILABLE),
    ("expired", Reason.COLLATERAL_UNAVAILABLE),
    ("fmspc mismatch", Reason.COLLATERAL_UNAVAILABLE),
    ("non-tdx tcb info", Reason.COLLATERAL_UNAVAILABLE),
    ("missing tdxmodule", Reason.COLLATERAL_UNAVAILABLE),
    # Trust: a signer of the PCK chain, the TCB info, the QE identity or a CRL does not
    # chain to the trust root.
    ("signature is invalid for tcb_info", Reason.CERT_CHAIN_UNTRUSTED),
    ("signature is invalid for qe_identity", Reason.CERT_CHAIN_UNTRUSTED),
    ("root ca", Reason.CERT_CHAIN_UNTRUSTED),
    ("certificate", Reason.CERT_CHAIN_UNTRUSTED),
    ("cert chain", Reason.CERT_CHAIN_UNTRUSTED),
    ("unknownissuer", Reason.CERT_CHAIN_UNTRUSTED),
    ("tcb info", Reason.CERT_CHAIN_UNTRUSTED),
    ("crl", Reason.CERT_CHAIN_UNTRUSTED),
    # Signatures over the quote itself: the TD report, the QE report, the attestation key.
    ("signature is invalid for qe_report", Reason.QUOTE_SIGNATURE_INVALID),
    ("qe report hash mismatch", Reason.QUOTE_SIGNATURE_INVALID),
    ("signature", Reason.QUOTE_SIGNATURE_INVALID),
)


@dataclass(frozen=True, slots=True)
class DcapVerdict:
    """What DCAP verification concluded about a quote's platform."""

    tcb_status: str
    advisory_ids: tuple[str, ...]


def verify_dcap(
    raw_quote: bytes,
    collateral: dcap_qvl.QuoteCollateralV3,
    trust_root_der: bytes | None,
    now: datetime,
) -> DcapVerdict:
    """Verify signatures, the PCK chain to the trust root, CRLs and the TCB level.

    ``trust_root_der`` None means the Intel SGX Root CA built into dcap-qvl.
    Raises AttestationRefused / RequestInvalid / CollateralUnavailable with the reason
    mapped from dcap-qvl's error.
    """
    seconds = int(now.timestamp())
    try:
        if trust_root_der is None:
            report = dcap_qvl.verify(raw_quote, collateral, seconds)
        else:
            report = dcap_qvl.verify_with_root_ca(raw_quote, collateral, trust_root_der, seconds)
    except ValueError as exc:
        raise refusal_for(str(exc)) from None
    return DcapVerdict(tcb_status=report.status, advisory_ids=tuple(report.advisory_ids))


def refusal_for(message: str) -> AttestationRefused | RequestInvalid | CollateralUnavailable:
    """The refusal for a dcap-qvl error message. Raises nothing."""
    detail = " / ".join(line.strip() for line in message.splitlines() if line.strip())
    detail = detail.removeprefix("Verification failed: ")[:300]
    reason = reason_for(message)
    if reason is Reason.QUOTE_MALFORMED:
        return RequestInvalid(f"quote cannot be decoded: {detail}", reason)
    if reason is Reason.COLLATERAL_UNAVAILABLE:
        return CollateralUnavailable(f"collateral not valid now: {detail}", retry_after=60)
    return AttestationRefused(f"DCAP verification failed: {detail}", reason)


def reason_for(message: str) -> Reason:
    """The reason a dcap-qvl error message maps to. Raises nothing.

    A message no fragment matches is still a refusal (quote_signature_invalid: the
    evidence did not verify), logged so the table above can learn it.
    """
    lowered = message.lower()
    for fragment, reason in _MESSAGE_REASONS:
        if fragment in lowered:
            return reason
    LOG.warning("unclassified dcap-qvl error: %s", " / ".join(message.splitlines())[:300])
    return Reason.QUOTE_SIGNATURE_INVALID
