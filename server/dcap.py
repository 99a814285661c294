"""DCAP verification with dcap-qvl, its errors mapped to stable reasons."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import dcap_qvl

from agent.protocol import Reason
from server.errors import AttestationRefused, CollateralUnavailable, RequestInvalid

# dcap-qvl reports every failure as ValueError with a message; these fragments (lowercase)
# select the reason. The first match wins, so more specific fragments come first.
_MESSAGE_REASONS: tuple[tuple[str, Reason], ...] = (
    ("debug mode is enabled", Reason.DEBUG_TD),
    ("tcb status is invalid", Reason.TCB_STATUS_REJECTED),
    ("certrevoked", Reason.PCK_REVOKED),
    ("revoked", Reason.PCK_REVOKED),
    ("failed to decode quote", Reason.QUOTE_MALFORMED),
    ("failed to parse quote", Reason.QUOTE_MALFORMED),
    ("not enough data", Reason.QUOTE_MALFORMED),
    ("unsupported quote version", Reason.QUOTE_VERSION_UNSUPPORTED),
    ("no matching tcb level", Reason.TCB_STATUS_REJECTED),
    ("crlexpired", Reason.COLLATERAL_UNAVAILABLE),
    ("issue date is in the future", Reason.COLLATERAL_UNAVAILABLE),
    ("expired", Reason.COLLATERAL_UNAVAILABLE),
    ("root ca", Reason.CERT_CHAIN_UNTRUSTED),
    ("certificate", Reason.CERT_CHAIN_UNTRUSTED),
    ("cert chain", Reason.CERT_CHAIN_UNTRUSTED),
    ("tcb info", Reason.CERT_CHAIN_UNTRUSTED),
    ("crl", Reason.CERT_CHAIN_UNTRUSTED),
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
    lowered = message.lower()
    reason = next(
        (reason for fragment, reason in _MESSAGE_REASONS if fragment in lowered),
        Reason.QUOTE_SIGNATURE_INVALID,
    )
    if reason is Reason.QUOTE_MALFORMED:
        return RequestInvalid(f"quote cannot be decoded: {detail}", reason)
    if reason is Reason.COLLATERAL_UNAVAILABLE:
        return CollateralUnavailable(f"collateral not valid now: {detail}", retry_after=60)
    return AttestationRefused(f"DCAP verification failed: {detail}", reason)
