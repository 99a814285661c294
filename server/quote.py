"""Quote bytes -> the fields the policy needs (no I/O, no verification)."""

from __future__ import annotations

from dataclasses import dataclass

import dcap_qvl

from tdx_boot_attest.agent import quote_layout as layout
from tdx_boot_attest.agent.protocol import Reason
from tdx_boot_attest.server.errors import AttestationRefused, RequestInvalid

RTMR_NAMES = ("rtmr0", "rtmr1", "rtmr2", "rtmr3")
PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
PLATFORM_CACHE_SIZE = 1024
_PLATFORMS: dict[bytes, tuple[str, str]] = {}


@dataclass(frozen=True, slots=True)
class TdQuote:
    """The parsed parts of a TDX quote that verification and policy look at (hex lowercase)."""

    raw: bytes
    version: int
    fmspc: str
    ca: str
    mrtd: str
    rtmrs: tuple[str, str, str, str]
    mrconfigid: str
    mrowner: str
    td_attributes: bytes
    report_data: bytes
    mrseam: str
    xfam: bytes
    tee_tcb_svn: bytes

    @property
    def debug(self) -> bool:
        """True when TDATTRIBUTES.DEBUG (bit 0) is set: the host can read the TD's memory."""
        return bool(self.td_attributes[0] & layout.TD_ATTRIBUTE_DEBUG)

    def measurements(self) -> dict[str, str]:
        """Register name -> hex value, for matching and audit."""
        return {"mrtd": self.mrtd, **dict(zip(RTMR_NAMES, self.rtmrs, strict=True))}


def parse_td_quote(raw: bytes) -> TdQuote:
    """Parse ``raw`` as a TDX quote (version 4 or 5).

    Raises RequestInvalid(quote_malformed) when the bytes are not a quote,
    AttestationRefused(not_tdx) for an SGX quote and
    AttestationRefused(quote_version_unsupported) for another version.
    """
    if len(raw) < layout.HEADER_BYTES:
        raise RequestInvalid(
            f"quote is {len(raw)} bytes, shorter than a quote header", Reason.QUOTE_MALFORMED
        )
    version = int.from_bytes(
        raw[layout.HEADER_VERSION.offset : layout.HEADER_VERSION.end], "little"
    )
    tee_type = int.from_bytes(
        raw[layout.HEADER_TEE_TYPE.offset : layout.HEADER_TEE_TYPE.end], "little"
    )
    if tee_type != layout.TEE_TYPE_TDX:
        raise AttestationRefused(
            f"quote has TEE type {tee_type:#x}, not TDX ({layout.TEE_TYPE_TDX:#x})", Reason.NOT_TDX
        )
    if version not in layout.SUPPORTED_TDX_VERSIONS:
        raise AttestationRefused(
            f"quote version {version} is not supported (supported: 4, 5)",
            Reason.QUOTE_VERSION_UNSUPPORTED,
        )
    try:
        parsed = dcap_qvl.parse_quote(raw)
        report = parsed.report
        fmspc, ca = _platform_of(raw, parsed)
        fields = (
            report.mr_td,
            report.rt_mr0,
            report.rt_mr1,
            report.rt_mr2,
            report.rt_mr3,
            report.mr_config_id,
            report.mr_owner,
            report.td_attributes,
            report.report_data,
            report.mr_seam,
            report.xfam,
            report.tee_tcb_svn,
        )
    except (ValueError, AttributeError) as exc:
        raise RequestInvalid(
            f"quote cannot be parsed: {_first_line(exc)}", Reason.QUOTE_MALFORMED
        ) from None
    mrtd, r0, r1, r2, r3, mrconfigid, mrowner, attributes, report_data = fields[:9]
    mrseam, xfam, tee_tcb_svn = fields[9:]
    return TdQuote(
        raw=raw,
        version=version,
        fmspc=fmspc,
        ca=ca,
        mrtd=mrtd.hex(),
        rtmrs=(r0.hex(), r1.hex(), r2.hex(), r3.hex()),
        mrconfigid=mrconfigid.hex(),
        mrowner=mrowner.hex(),
        td_attributes=bytes(attributes),
        report_data=bytes(report_data),
        mrseam=mrseam.hex(),
        xfam=bytes(xfam),
        tee_tcb_svn=bytes(tee_tcb_svn),
    )


def _platform_of(raw: bytes, parsed: dcap_qvl.Quote) -> tuple[str, str]:
    """FMSPC and PCK CA from the quote's PCK certificate, cached by certificate chain.

    Parsing the PCK certificate costs more than the rest of the quote; a platform sends
    the same chain in every quote. The values only pick collateral: DCAP verification
    checks the chain itself. Raises ValueError when the certificate cannot be read.
    """
    start = raw.find(PEM_BEGIN)
    chain = raw[start:] if start >= 0 else b""
    cached = _PLATFORMS.get(chain) if chain else None
    if cached is not None:
        return cached
    platform = (parsed.fmspc().lower(), parsed.ca())
    if chain:
        if len(_PLATFORMS) >= PLATFORM_CACHE_SIZE:
            _PLATFORMS.clear()
        _PLATFORMS[chain] = platform
    return platform


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
