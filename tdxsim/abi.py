"""DCAP quote bytes <-> dataclasses (Intel SGX/TDX ECDSA quote format), with no I/O.

Reads quote v3 (SGX), v4 (TDX 1.0 body) and v5 (body descriptor + TDX 1.0 or 1.5 body, or an
SGX body), and writes them back byte for byte, including anything after the signature
data (real quotes can carry zero padding there). Offsets follow Intel's "TDX DCAP Quoting
Library API" layout; every integer is little-endian. The header and body layout (offsets,
sizes, type codes) is the one of ``agent.quote_layout``, shared with agent and verifier.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

from tdx_boot_attest.agent import quote_layout as layout
from tdx_boot_attest.agent.quote_layout import (
    BODY_BYTES,
    BODY_DESCRIPTOR_BYTES,
    BODY_SGX_ENCLAVE,
    BODY_TD_REPORT10,
    BODY_TD_REPORT15,
    ENCLAVE_REPORT_BYTES,
    HEADER_BYTES,
    TD_ATTRIBUTE_DEBUG,
    TD_ATTRIBUTE_SEPT_VE_DISABLE,
    TD_REPORT10_BYTES,
    TD_REPORT15_BYTES,
    TEE_TYPE_SGX,
    TEE_TYPE_TDX,
)
from tdx_boot_attest.tdxsim.errors import NotTdxError, QuoteFormatError, QuoteVersionError

__all__ = [
    "BODY_DESCRIPTOR_BYTES",
    "BODY_SGX_ENCLAVE",
    "BODY_TD_REPORT10",
    "BODY_TD_REPORT15",
    "ENCLAVE_REPORT_BYTES",
    "HEADER_BYTES",
    "TD_ATTRIBUTE_DEBUG",
    "TD_ATTRIBUTE_SEPT_VE_DISABLE",
    "TD_REPORT10_BYTES",
    "TD_REPORT15_BYTES",
    "TEE_TYPE_SGX",
    "TEE_TYPE_TDX",
]

SIGNATURE_BYTES: Final = 64
ATTESTATION_KEY_BYTES: Final = 64
ATTESTATION_KEY_ECDSA_P256: Final = 2
INTEL_QE_VENDOR_ID: Final = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

CERT_PCK_CHAIN: Final = 5
CERT_QE_REPORT: Final = 6


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    @property
    def pos(self) -> int:
        return self._pos

    def take(self, n: int, field_name: str) -> bytes:
        end = self._pos + n
        if n < 0 or end > len(self._data):
            raise QuoteFormatError(
                f"{self._what} truncated in {field_name}: need {n} bytes at offset "
                f"{self._pos}, have {len(self._data) - self._pos}"
            )
        out = self._data[self._pos : end]
        self._pos = end
        return out

    def u16(self, field_name: str) -> int:
        value: int = struct.unpack("<H", self.take(2, field_name))[0]
        return value

    def u32(self, field_name: str) -> int:
        value: int = struct.unpack("<I", self.take(4, field_name))[0]
        return value

    def rest(self) -> bytes:
        out = self._data[self._pos :]
        self._pos = len(self._data)
        return out


def _check(name: str, value: bytes, size: int) -> None:
    if len(value) != size:
        raise QuoteFormatError(f"{name} must be {size} bytes, got {len(value)}")


@dataclass(frozen=True, slots=True)
class QuoteHeader:
    """The 48-byte quote header. ``qe_svn``/``pce_svn`` are reserved (zero) in TDX quotes."""

    version: int
    attestation_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes

    def __post_init__(self) -> None:
        _check("qe_vendor_id", self.qe_vendor_id, layout.HEADER_QE_VENDOR_ID.size)
        _check("user_data", self.user_data, layout.HEADER_USER_DATA.size)

    def to_bytes(self) -> bytes:
        """The header's 48 bytes. Raises struct.error for out-of-range integers."""
        return (
            struct.pack(
                "<HHIHH",
                self.version,
                self.attestation_key_type,
                self.tee_type,
                self.qe_svn,
                self.pce_svn,
            )
            + self.qe_vendor_id
            + self.user_data
        )

    @classmethod
    def parse(cls, data: bytes) -> QuoteHeader:
        """Parse 48 header bytes; raises QuoteFormatError when short."""
        r = _Reader(data, "quote header")
        version, key_type, tee_type, qe_svn, pce_svn = struct.unpack(
            "<HHIHH", r.take(layout.HEADER_QE_VENDOR_ID.offset, "header")
        )
        vendor, user = layout.HEADER_QE_VENDOR_ID, layout.HEADER_USER_DATA
        return cls(
            version,
            key_type,
            tee_type,
            qe_svn,
            pce_svn,
            r.take(vendor.size, vendor.name),
            r.take(user.size, user.name),
        )


# The simulator's attribute name of each TD report field the layout names otherwise.
_ATTRIBUTE_NAMES: Final = {
    "mrseam": "mr_seam",
    "mrsignerseam": "mr_signer_seam",
    "mrtd": "mr_td",
    "mrconfigid": "mr_config_id",
    "mrowner": "mr_owner",
    "mrownerconfig": "mr_owner_config",
}
# The TDX 1.0 TD report fields in order, with their sizes (a 1.5 report appends two).
_TD_REPORT10_FIELDS: Final = tuple(
    (_ATTRIBUTE_NAMES.get(f.name, f.name), f.size) for f in layout.TD_REPORT10_FIELDS
)
_TD_REPORT15_EXTRA: Final = tuple((f.name, f.size) for f in layout.TD_REPORT15_EXTRA_FIELDS)


@dataclass(frozen=True, slots=True)
class TdReport:
    """A TD report body: TDX 1.0 (584 bytes), or 1.5 (648 bytes) when the 1.5 fields are set."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes
    rtmr3: bytes
    report_data: bytes
    tee_tcb_svn2: bytes | None = None
    mr_service_td: bytes | None = None

    def __post_init__(self) -> None:
        for name, size in _TD_REPORT10_FIELDS:
            _check(name, getattr(self, name), size)
        if (self.tee_tcb_svn2 is None) != (self.mr_service_td is None):
            raise QuoteFormatError("a TDX 1.5 report needs both tee_tcb_svn2 and mr_service_td")
        if self.tee_tcb_svn2 is not None:
            for name, size in _TD_REPORT15_EXTRA:
                _check(name, getattr(self, name), size)

    @property
    def is_td15(self) -> bool:
        """True for a TDX 1.5 body. Raises nothing."""
        return self.tee_tcb_svn2 is not None

    @property
    def body_type(self) -> int:
        """The v5 body type of this report (2 or 3). Raises nothing."""
        return BODY_TD_REPORT15 if self.is_td15 else BODY_TD_REPORT10

    @property
    def rtmrs(self) -> tuple[bytes, bytes, bytes, bytes]:
        """RTMR0..RTMR3. Raises nothing."""
        return (self.rtmr0, self.rtmr1, self.rtmr2, self.rtmr3)

    @property
    def attributes_value(self) -> int:
        """TD attributes as an integer (little-endian). Raises nothing."""
        return int.from_bytes(self.td_attributes, "little")

    @property
    def debug(self) -> bool:
        """True when the TD runs in debug mode (its memory is readable by the host)."""
        return bool(self.attributes_value & TD_ATTRIBUTE_DEBUG)

    def to_bytes(self) -> bytes:
        """The report's 584 or 648 bytes. Raises nothing."""
        out = b"".join(getattr(self, name) for name, _ in _TD_REPORT10_FIELDS)
        if self.tee_tcb_svn2 is not None and self.mr_service_td is not None:
            out += self.tee_tcb_svn2 + self.mr_service_td
        return out

    @classmethod
    def parse(cls, data: bytes, td15: bool) -> TdReport:
        """Parse a TDX 1.0 or 1.5 body; raises QuoteFormatError on a size mismatch."""
        expected = TD_REPORT15_BYTES if td15 else TD_REPORT10_BYTES
        if len(data) != expected:
            raise QuoteFormatError(f"TD report must be {expected} bytes, got {len(data)}")
        r = _Reader(data, "TD report")
        values = {name: r.take(size, name) for name, size in _TD_REPORT10_FIELDS}
        if td15:
            values.update((name, r.take(size, name)) for name, size in _TD_REPORT15_EXTRA)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class EnclaveReport:
    """An SGX enclave report (384 bytes): an SGX quote's body, or the QE report."""

    cpu_svn: bytes
    misc_select: int
    reserved1: bytes
    attributes: bytes
    mr_enclave: bytes
    reserved2: bytes
    mr_signer: bytes
    reserved3: bytes
    isv_prod_id: int
    isv_svn: int
    reserved4: bytes
    report_data: bytes

    def __post_init__(self) -> None:
        for name, size in (
            ("cpu_svn", 16), ("reserved1", 28), ("attributes", 16), ("mr_enclave", 32),
            ("reserved2", 32), ("mr_signer", 32), ("reserved3", 96), ("reserved4", 60),
            ("report_data", 64),
        ):  # fmt: skip
            _check(name, getattr(self, name), size)

    def to_bytes(self) -> bytes:
        """The report's 384 bytes. Raises struct.error for out-of-range integers."""
        return b"".join(
            (
                self.cpu_svn,
                struct.pack("<I", self.misc_select),
                self.reserved1,
                self.attributes,
                self.mr_enclave,
                self.reserved2,
                self.mr_signer,
                self.reserved3,
                struct.pack("<HH", self.isv_prod_id, self.isv_svn),
                self.reserved4,
                self.report_data,
            )
        )

    @classmethod
    def parse(cls, data: bytes) -> EnclaveReport:
        """Parse 384 bytes; raises QuoteFormatError on a size mismatch."""
        if len(data) != ENCLAVE_REPORT_BYTES:
            raise QuoteFormatError(f"enclave report must be 384 bytes, got {len(data)}")
        r = _Reader(data, "enclave report")
        return cls(
            cpu_svn=r.take(16, "cpu_svn"),
            misc_select=r.u32("misc_select"),
            reserved1=r.take(28, "reserved1"),
            attributes=r.take(16, "attributes"),
            mr_enclave=r.take(32, "mr_enclave"),
            reserved2=r.take(32, "reserved2"),
            mr_signer=r.take(32, "mr_signer"),
            reserved3=r.take(96, "reserved3"),
            isv_prod_id=r.u16("isv_prod_id"),
            isv_svn=r.u16("isv_svn"),
            reserved4=r.take(60, "reserved4"),
            report_data=r.take(64, "report_data"),
        )


@dataclass(frozen=True, slots=True)
class CertificationData:
    """Certification data: a type (5 = PEM PCK chain, 6 = QE report data, ...) and its bytes."""

    cert_type: int
    data: bytes

    def to_bytes(self) -> bytes:
        """Type (u16), size (u32), data. Raises nothing."""
        return struct.pack("<HI", self.cert_type, len(self.data)) + self.data

    @classmethod
    def read(cls, r: _Reader) -> CertificationData:
        cert_type = r.u16("certification data type")
        size = r.u32("certification data size")
        return cls(cert_type, r.take(size, "certification data"))


@dataclass(frozen=True, slots=True)
class QeReportCertificationData:
    """The QE report, its PCK signature, the QE authentication data and the PCK certification."""

    qe_report: EnclaveReport
    qe_report_signature: bytes
    qe_auth_data: bytes
    certification_data: CertificationData

    def __post_init__(self) -> None:
        _check("qe_report_signature", self.qe_report_signature, SIGNATURE_BYTES)
        if len(self.qe_auth_data) > 0xFFFF:
            raise QuoteFormatError("QE authentication data longer than 65535 bytes")

    def to_bytes(self) -> bytes:
        """The fields in quote order. Raises nothing."""
        return (
            self.qe_report.to_bytes()
            + self.qe_report_signature
            + struct.pack("<H", len(self.qe_auth_data))
            + self.qe_auth_data
            + self.certification_data.to_bytes()
        )

    @classmethod
    def read(cls, r: _Reader) -> QeReportCertificationData:
        qe_report = EnclaveReport.parse(r.take(ENCLAVE_REPORT_BYTES, "QE report"))
        signature = r.take(SIGNATURE_BYTES, "QE report signature")
        auth_size = r.u16("QE auth data size")
        auth = r.take(auth_size, "QE auth data")
        return cls(qe_report, signature, auth, CertificationData.read(r))

    def pck_chain_pem(self) -> bytes:
        """The PEM PCK chain (type 5 data, leaf first); raises QuoteFormatError otherwise."""
        if self.certification_data.cert_type != CERT_PCK_CHAIN:
            raise QuoteFormatError(
                f"certification data type {self.certification_data.cert_type} "
                "carries no PCK certificate chain (expected type 5)"
            )
        return self.certification_data.data


@dataclass(frozen=True, slots=True)
class SignatureData:
    """The ECDSA signature over header and body, the attestation key and the QE's evidence.

    In v4/v5 quotes the QE evidence travels as certification data type 6; in v3 inline.
    """

    signature: bytes
    attestation_key: bytes
    qe: QeReportCertificationData

    def __post_init__(self) -> None:
        _check("signature", self.signature, SIGNATURE_BYTES)
        _check("attestation_key", self.attestation_key, ATTESTATION_KEY_BYTES)

    def to_bytes(self, version: int) -> bytes:
        """Encode for a quote of ``version``. Raises nothing."""
        qe = self.qe.to_bytes()
        if version == 3:
            return self.signature + self.attestation_key + qe
        return (
            self.signature + self.attestation_key + CertificationData(CERT_QE_REPORT, qe).to_bytes()
        )

    @classmethod
    def parse(cls, data: bytes, version: int) -> SignatureData:
        """Parse signature data of a quote of ``version``.

        Raises QuoteFormatError when malformed, QuoteVersionError for certification data
        other than type 6 in a v4/v5 quote.
        """
        r = _Reader(data, "signature data")
        signature = r.take(SIGNATURE_BYTES, "quote signature")
        key = r.take(ATTESTATION_KEY_BYTES, "attestation key")
        if version == 3:
            qe = QeReportCertificationData.read(r)
        else:
            outer = CertificationData.read(r)
            if outer.cert_type != CERT_QE_REPORT:
                raise QuoteVersionError(
                    f"certification data type {outer.cert_type} is not supported "
                    "(expected 6, QE report certification data)"
                )
            inner = _Reader(outer.data, "QE report certification data")
            qe = QeReportCertificationData.read(inner)
            if inner.pos != len(outer.data):
                raise QuoteFormatError("bytes left over inside QE report certification data")
        if r.pos != len(data):
            raise QuoteFormatError("bytes left over inside the quote signature data")
        return cls(signature, key, qe)


@dataclass(frozen=True, slots=True)
class Quote:
    """A parsed quote. ``trailing`` keeps bytes after the signature data (e.g. zero padding)."""

    header: QuoteHeader
    body: TdReport | EnclaveReport
    signature_data: SignatureData
    trailing: bytes = field(default=b"")

    @property
    def is_tdx(self) -> bool:
        """True when the header says TDX and the body is a TD report. Raises nothing."""
        return self.header.tee_type == TEE_TYPE_TDX and isinstance(self.body, TdReport)

    @property
    def td_report(self) -> TdReport:
        """The TD report body; raises NotTdxError for an SGX quote."""
        if not isinstance(self.body, TdReport):
            raise NotTdxError("quote is an SGX enclave quote, not a TDX quote")
        return self.body

    @property
    def body_type(self) -> int:
        """1 (SGX), 2 (TDX 1.0) or 3 (TDX 1.5). Raises nothing."""
        if isinstance(self.body, TdReport):
            return self.body.body_type
        return BODY_SGX_ENCLAVE

    def signed_bytes(self) -> bytes:
        """The bytes the attestation key signs: header (+ v5 body descriptor) + body."""
        body = self.body.to_bytes()
        descriptor = b""
        if self.header.version == 5:
            descriptor = struct.pack("<HI", self.body_type, len(body))
        return self.header.to_bytes() + descriptor + body

    def to_bytes(self) -> bytes:
        """The quote's exact bytes. Raises nothing for a quote built from valid parts."""
        sig = self.signature_data.to_bytes(self.header.version)
        return self.signed_bytes() + struct.pack("<I", len(sig)) + sig + self.trailing


def parse_quote(data: bytes) -> Quote:
    """Parse a DCAP quote (v3 SGX, v4 or v5).

    Raises QuoteFormatError when malformed, QuoteVersionError for a version, key type,
    TEE type or body type this parser does not know.
    """
    r = _Reader(data, "quote")
    header = QuoteHeader.parse(r.take(HEADER_BYTES, "header"))
    if header.attestation_key_type != ATTESTATION_KEY_ECDSA_P256:
        raise QuoteVersionError(
            f"attestation key type {header.attestation_key_type} is not supported "
            "(ECDSA P-256 is 2)"
        )
    if header.tee_type not in (TEE_TYPE_SGX, TEE_TYPE_TDX):
        raise QuoteVersionError(f"unknown TEE type 0x{header.tee_type:08x}")
    body: TdReport | EnclaveReport
    if header.version == 3:
        if header.tee_type != TEE_TYPE_SGX:
            raise QuoteFormatError("quote v3 must carry an SGX enclave report")
        body = EnclaveReport.parse(r.take(ENCLAVE_REPORT_BYTES, "body"))
    elif header.version == 4:
        if header.tee_type == TEE_TYPE_TDX:
            body = TdReport.parse(r.take(TD_REPORT10_BYTES, "body"), td15=False)
        else:
            body = EnclaveReport.parse(r.take(ENCLAVE_REPORT_BYTES, "body"))
    elif header.version == 5:
        body_type = r.u16("body type")
        size = r.u32("body size")
        expected = BODY_BYTES.get(body_type)
        if expected is None:
            raise QuoteVersionError(f"quote v5 body type {body_type} is not supported")
        if size != expected:
            raise QuoteFormatError(f"quote v5 body type {body_type} must be {expected} bytes")
        raw = r.take(size, "body")
        if body_type == BODY_SGX_ENCLAVE:
            body = EnclaveReport.parse(raw)
        else:
            if header.tee_type != TEE_TYPE_TDX:
                raise QuoteFormatError("TD report body in a quote whose TEE type is not TDX")
            body = TdReport.parse(raw, td15=body_type == BODY_TD_REPORT15)
    else:
        raise QuoteVersionError(f"quote version {header.version} is not supported")
    sig_size = r.u32("signature data size")
    signature_data = SignatureData.parse(r.take(sig_size, "signature data"), header.version)
    return Quote(header, body, signature_data, r.rest())


def parse_tdx_quote(data: bytes) -> Quote:
    """Parse a quote and require it to be TDX (v4 or v5 with a TD report body).

    Raises NotTdxError for an SGX quote, QuoteFormatError/QuoteVersionError as parse_quote.
    """
    quote = parse_quote(data)
    if not quote.is_tdx:
        raise NotTdxError(
            f"quote has TEE type 0x{quote.header.tee_type:08x} and an SGX body, not a TD report"
        )
    return quote
