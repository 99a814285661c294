"""Collateral: TDX TCB info v3, TD QE identity v2, CRLs and issuer chains, signed like Intel's.

TCB info and QE identity are compact JSON signed over their exact text by the TCB signing
key (ECDSA P-256/SHA-256, signature as raw r||s, hex in transport). The whole set is
exported in dcap-qvl's ``QuoteCollateralV3`` JSON layout (CRLs and signatures as hex).
No I/O.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from tdx_boot_attest.tdxsim import tcb
from tdx_boot_attest.tdxsim.errors import CollateralError
from tdx_boot_attest.tdxsim.keys import sign_raw
from tdx_boot_attest.tdxsim.pki import Pki
from tdx_boot_attest.tdxsim.qe import (
    QE_IDENTITY_ATTRIBUTES,
    QE_IDENTITY_ATTRIBUTES_MASK,
    QuotingEnclave,
)

DEFAULT_VALIDITY: Final = dt.timedelta(days=45)
# Back-dating of a fresh issue, so a verifier whose clock lags a little still accepts it.
DEFAULT_BACKDATE: Final = dt.timedelta(hours=1)
TCB_EVALUATION_DATA_NUMBER: Final = 17
_TDX_MODULE_MRSIGNER: Final = "00" * 48

# Labels Intel gives the first TCB components (the rest are unlabelled).
_SGX_COMPONENT_LABELS: Final = (
    ("BIOS", "Early Microcode Update"),
    ("OS/VMM", "SGX Late Microcode Update"),
    ("OS/VMM", "TXT SINIT"),
    ("BIOS", None),
    ("BIOS", None),
    ("BIOS", None),
    (None, None),
    ("OS/VMM", "SEAMLDR ACM"),
)
_TDX_COMPONENT_LABELS: Final = (
    ("OS/VMM", "TDX Module"),
    ("OS/VMM", "TDX Module"),
    ("OS/VMM", "TDX Late Microcode Update"),
)


def format_time(when: dt.datetime) -> str:
    """RFC 3339 UTC with a Z and whole seconds, as Intel writes dates; raises CollateralError."""
    if when.tzinfo is None:
        raise CollateralError("collateral times must be timezone-aware")
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> dt.datetime:
    """Parse an ISO 8601 time (``Z`` or offset; naive means UTC). Raises CollateralError."""
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise CollateralError(f"not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).replace(microsecond=0)


@dataclass(frozen=True, slots=True)
class CollateralParams:
    """What a tester chooses about the collateral: validity window, TCB levels, QE levels."""

    issue_date: dt.datetime
    next_update: dt.datetime
    tcb_levels: tuple[tcb.TcbLevel, ...] = tcb.DEFAULT_TCB_LEVELS
    qe_tcb_levels: tuple[tcb.QeTcbLevel, ...] = tcb.DEFAULT_QE_TCB_LEVELS
    tcb_evaluation_data_number: int = TCB_EVALUATION_DATA_NUMBER
    crl_number: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "issue_date", parse_time(format_time(self.issue_date)))
        object.__setattr__(self, "next_update", parse_time(format_time(self.next_update)))
        if self.next_update <= self.issue_date:
            raise CollateralError("nextUpdate must be after issueDate")
        if not self.tcb_levels:
            raise CollateralError("TCB info needs at least one TCB level")
        if not self.qe_tcb_levels:
            raise CollateralError("QE identity needs at least one TCB level")

    @classmethod
    def fresh(cls, now: dt.datetime, validity: dt.timedelta = DEFAULT_VALIDITY) -> CollateralParams:
        """Default levels, issued just before ``now`` and valid for ``validity``."""
        return cls(issue_date=now - DEFAULT_BACKDATE, next_update=now + validity)

    def to_json(self) -> dict[str, Any]:
        """State-file form. Raises nothing."""
        return {
            "issue_date": format_time(self.issue_date),
            "next_update": format_time(self.next_update),
            "tcb_evaluation_data_number": self.tcb_evaluation_data_number,
            "crl_number": self.crl_number,
            "tcb_levels": [level.to_json() for level in self.tcb_levels],
            "qe_tcb_levels": [
                {
                    "isvsvn": q.isvsvn,
                    "status": q.status.value,
                    "tcb_date": q.tcb_date,
                    "advisory_ids": list(q.advisory_ids),
                }
                for q in self.qe_tcb_levels
            ],
        }

    @classmethod
    def from_json(cls, data: Any) -> CollateralParams:
        """Read the state-file form; raises CollateralError when malformed."""
        try:
            return cls(
                issue_date=parse_time(str(data["issue_date"])),
                next_update=parse_time(str(data["next_update"])),
                tcb_evaluation_data_number=int(data["tcb_evaluation_data_number"]),
                crl_number=int(data["crl_number"]),
                tcb_levels=tuple(tcb.TcbLevel.from_json(x) for x in data["tcb_levels"]),
                qe_tcb_levels=tuple(
                    tcb.QeTcbLevel(
                        isvsvn=int(q["isvsvn"]),
                        status=tcb.parse_status(str(q["status"])),
                        tcb_date=str(q["tcb_date"]),
                        advisory_ids=tuple(str(a) for a in q.get("advisory_ids", [])),
                    )
                    for q in data["qe_tcb_levels"]
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CollateralError(f"malformed collateral parameters: {exc}") from None


def _components(
    svns: bytes, labels: tuple[tuple[str | None, str | None], ...]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, svn in enumerate(svns):
        entry: dict[str, Any] = {"svn": svn}
        category, kind = labels[i] if i < len(labels) else (None, None)
        if category is not None:
            entry["category"] = category
        if kind is not None:
            entry["type"] = kind
        out.append(entry)
    return out


def _level_json(
    status: tcb.TcbStatus, tcb_date: str, advisories: tuple[str, ...]
) -> dict[str, Any]:
    out: dict[str, Any] = {"tcbDate": tcb_date, "tcbStatus": status.value}
    if advisories:
        out["advisoryIDs"] = list(advisories)
    return out


def _dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def tcb_info_json(fmspc: bytes, params: CollateralParams) -> str:
    """The TDX TCB info (id TDX, version 3) as the exact compact JSON text that gets signed.

    Raises CollateralError for bad dates.
    """
    module_base = {
        "mrsigner": _TDX_MODULE_MRSIGNER,
        "attributes": "00" * 8,
        "attributesMask": "FF" * 8,
    }
    module_identities = [
        {
            "id": "TDX_03",
            **module_base,
            "tcbLevels": [
                {
                    "tcb": {"isvsvn": 3},
                    **_level_json(tcb.TcbStatus.UP_TO_DATE, "2025-02-12T00:00:00Z", ()),
                }
            ],
        },
        {
            "id": "TDX_01",
            **module_base,
            "tcbLevels": [
                {
                    "tcb": {"isvsvn": 4},
                    **_level_json(tcb.TcbStatus.UP_TO_DATE, "2025-02-12T00:00:00Z", ()),
                },
                {
                    "tcb": {"isvsvn": 2},
                    **_level_json(tcb.TcbStatus.OUT_OF_DATE, "2023-08-09T00:00:00Z", ()),
                },
            ],
        },
    ]
    levels = [
        {
            "tcb": {
                "sgxtcbcomponents": _components(level.sgx_components, _SGX_COMPONENT_LABELS),
                "pcesvn": level.pcesvn,
                "tdxtcbcomponents": _components(level.tdx_components, _TDX_COMPONENT_LABELS),
            },
            **_level_json(level.status, level.tcb_date, level.advisory_ids),
        }
        for level in params.tcb_levels
    ]
    return _dumps(
        {
            "id": "TDX",
            "version": 3,
            "issueDate": format_time(params.issue_date),
            "nextUpdate": format_time(params.next_update),
            "fmspc": fmspc.hex().upper(),
            "pceId": "0000",
            "tcbType": 0,
            "tcbEvaluationDataNumber": params.tcb_evaluation_data_number,
            "tdxModule": module_base,
            "tdxModuleIdentities": module_identities,
            "tcbLevels": levels,
        }
    )


def qe_identity_json(qe: QuotingEnclave, params: CollateralParams) -> str:
    """The TD QE identity (id TD_QE, version 2) as the exact compact JSON text that gets signed.

    Raises CollateralError for bad dates.
    """
    return _dumps(
        {
            "id": "TD_QE",
            "version": 2,
            "issueDate": format_time(params.issue_date),
            "nextUpdate": format_time(params.next_update),
            "tcbEvaluationDataNumber": params.tcb_evaluation_data_number,
            "miscselect": "00000000",
            "miscselectMask": "FFFFFFFF",
            "attributes": QE_IDENTITY_ATTRIBUTES.hex().upper(),
            "attributesMask": QE_IDENTITY_ATTRIBUTES_MASK.hex().upper(),
            "mrsigner": qe.mrsigner.hex().upper(),
            "isvprodid": qe.isvprodid,
            "tcbLevels": [
                {"tcb": {"isvsvn": q.isvsvn}, **_level_json(q.status, q.tcb_date, q.advisory_ids)}
                for q in params.qe_tcb_levels
            ],
        }
    )


@dataclass(frozen=True, slots=True)
class Collateral:
    """Everything a verifier needs besides the quote and the trust root."""

    pck_crl_issuer_chain: str
    root_ca_crl: bytes
    pck_crl: bytes
    tcb_info_issuer_chain: str
    tcb_info: str
    tcb_info_signature: bytes
    qe_identity_issuer_chain: str
    qe_identity: str
    qe_identity_signature: bytes
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_qvl_json(self) -> str:
        """dcap-qvl ``QuoteCollateralV3`` JSON (CRLs and signatures as hex). Raises nothing."""
        return json.dumps(
            {
                "pck_crl_issuer_chain": self.pck_crl_issuer_chain,
                "root_ca_crl": self.root_ca_crl.hex(),
                "pck_crl": self.pck_crl.hex(),
                "tcb_info_issuer_chain": self.tcb_info_issuer_chain,
                "tcb_info": self.tcb_info,
                "tcb_info_signature": self.tcb_info_signature.hex(),
                "qe_identity_issuer_chain": self.qe_identity_issuer_chain,
                "qe_identity": self.qe_identity,
                "qe_identity_signature": self.qe_identity_signature.hex(),
                **self.extra,
            },
            indent=1,
        )

    @classmethod
    def from_qvl_json(cls, text: str) -> Collateral:
        """Parse ``QuoteCollateralV3`` JSON; raises CollateralError when malformed."""
        try:
            data = json.loads(text)
            known = {
                "pck_crl_issuer_chain", "root_ca_crl", "pck_crl", "tcb_info_issuer_chain",
                "tcb_info", "tcb_info_signature", "qe_identity_issuer_chain", "qe_identity",
                "qe_identity_signature",
            }  # fmt: skip
            return cls(
                pck_crl_issuer_chain=str(data["pck_crl_issuer_chain"]),
                root_ca_crl=bytes.fromhex(data["root_ca_crl"]),
                pck_crl=bytes.fromhex(data["pck_crl"]),
                tcb_info_issuer_chain=str(data["tcb_info_issuer_chain"]),
                tcb_info=str(data["tcb_info"]),
                tcb_info_signature=bytes.fromhex(data["tcb_info_signature"]),
                qe_identity_issuer_chain=str(data["qe_identity_issuer_chain"]),
                qe_identity=str(data["qe_identity"]),
                qe_identity_signature=bytes.fromhex(data["qe_identity_signature"]),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CollateralError(f"malformed QuoteCollateralV3 JSON: {exc}") from None


def build(
    pki: Pki,
    qe: QuotingEnclave,
    *,
    fmspc: bytes,
    params: CollateralParams,
    revoked_pck: Mapping[int, dt.datetime],
    revoked_ca: Mapping[int, dt.datetime],
) -> Collateral:
    """Sign a full collateral set for ``params``; CRLs list the revoked serials.

    Raises CollateralError for bad dates.
    """
    tcb_info = tcb_info_json(fmspc, params)
    qe_identity = qe_identity_json(qe, params)
    signer = pki.tcb_signing.key
    tcb_chain = (pki.tcb_signing.pem + pki.root.pem).decode("ascii")
    return Collateral(
        pck_crl_issuer_chain=(pki.platform_ca.pem + pki.root.pem).decode("ascii"),
        root_ca_crl=pki.root_crl(
            revoked_ca, params.issue_date, params.next_update, params.crl_number
        ),
        pck_crl=pki.pck_crl(revoked_pck, params.issue_date, params.next_update, params.crl_number),
        tcb_info_issuer_chain=tcb_chain,
        tcb_info=tcb_info,
        tcb_info_signature=sign_raw(signer, tcb_info.encode("utf-8")),
        qe_identity_issuer_chain=tcb_chain,
        qe_identity=qe_identity,
        qe_identity_signature=sign_raw(signer, qe_identity.encode("utf-8")),
    )
