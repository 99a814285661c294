"""The Intel SGX extension of a PCK certificate (OID 1.2.840.113741.1.13.1), as Intel lays it out.

SEQUENCE {
  { PPID (.1) OCTET STRING(16) }
  { TCB (.2) SEQUENCE { {.2.1 INTEGER} ... {.2.16 INTEGER}, {PCESVN .2.17 INTEGER},
                        {CPUSVN .2.18 OCTET STRING(16)} } }
  { PCE-ID (.3) OCTET STRING(2) }  { FMSPC (.4) OCTET STRING(6) }  { SGX type (.5) ENUMERATED }
  { platform instance id (.6) OCTET STRING(16) }                     (platform CA certificates)
  { configuration (.7) SEQUENCE { dynamic platform .7.1, cached keys .7.2, SMT .7.3 BOOLEAN } }
}
No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from tdx_boot_attest.tdxsim import der
from tdx_boot_attest.tdxsim.errors import PkiError

SGX_EXTENSION_OID: Final = "1.2.840.113741.1.13.1"
_PPID = SGX_EXTENSION_OID + ".1"
_TCB = SGX_EXTENSION_OID + ".2"
_PCESVN = _TCB + ".17"
_CPUSVN = _TCB + ".18"
_PCEID = SGX_EXTENSION_OID + ".3"
_FMSPC = SGX_EXTENSION_OID + ".4"
_SGX_TYPE = SGX_EXTENSION_OID + ".5"
_PLATFORM_INSTANCE_ID = SGX_EXTENSION_OID + ".6"
_CONFIGURATION = SGX_EXTENSION_OID + ".7"
_DYNAMIC_PLATFORM = _CONFIGURATION + ".1"
_CACHED_KEYS = _CONFIGURATION + ".2"
_SMT_ENABLED = _CONFIGURATION + ".3"

SGX_TYPE_STANDARD: Final = 0
SGX_TYPE_SCALABLE: Final = 1


@dataclass(frozen=True, slots=True)
class PckExtension:
    """What a PCK certificate says about its platform."""

    ppid: bytes
    cpusvn: bytes  # 16 bytes; byte i is TCB component i+1 (.2.1 .. .2.16)
    pcesvn: int
    pce_id: bytes
    fmspc: bytes
    sgx_type: int = SGX_TYPE_SCALABLE
    platform_instance_id: bytes | None = None
    dynamic_platform: bool = True
    cached_keys: bool = True
    smt_enabled: bool = True

    def __post_init__(self) -> None:
        sizes = {"ppid": (self.ppid, 16), "cpusvn": (self.cpusvn, 16)}
        sizes |= {"pce_id": (self.pce_id, 2), "fmspc": (self.fmspc, 6)}
        for name, (value, size) in sizes.items():
            if len(value) != size:
                raise PkiError(f"{name} must be {size} bytes, got {len(value)}")
        if self.platform_instance_id is not None and len(self.platform_instance_id) != 16:
            raise PkiError("platform_instance_id must be 16 bytes")
        if not 0 <= self.pcesvn <= 0xFFFF:
            raise PkiError("pcesvn must fit in 16 bits")


def _entry(oid: str, value: bytes) -> bytes:
    return der.sequence(der.oid(oid), value)


def encode(ext: PckExtension) -> bytes:
    """DER of the extension value (what goes inside the extension's OCTET STRING).

    Raises nothing for a valid PckExtension.
    """
    components = [_entry(f"{_TCB}.{i + 1}", der.integer(svn)) for i, svn in enumerate(ext.cpusvn)]
    components.append(_entry(_PCESVN, der.integer(ext.pcesvn)))
    components.append(_entry(_CPUSVN, der.octet_string(ext.cpusvn)))
    parts = [
        _entry(_PPID, der.octet_string(ext.ppid)),
        _entry(_TCB, der.sequence(*components)),
        _entry(_PCEID, der.octet_string(ext.pce_id)),
        _entry(_FMSPC, der.octet_string(ext.fmspc)),
        _entry(_SGX_TYPE, der.enumerated(ext.sgx_type)),
    ]
    if ext.platform_instance_id is not None:
        parts.append(_entry(_PLATFORM_INSTANCE_ID, der.octet_string(ext.platform_instance_id)))
        parts.append(
            _entry(
                _CONFIGURATION,
                der.sequence(
                    _entry(_DYNAMIC_PLATFORM, der.boolean(ext.dynamic_platform)),
                    _entry(_CACHED_KEYS, der.boolean(ext.cached_keys)),
                    _entry(_SMT_ENABLED, der.boolean(ext.smt_enabled)),
                ),
            )
        )
    return der.sequence(*parts)


def _pairs(element: der.Element) -> dict[str, der.Element]:
    if element.tag != der.TAG_SEQUENCE:
        raise PkiError("SGX extension entry list is not a SEQUENCE")
    out: dict[str, der.Element] = {}
    for entry in element.children():
        fields = entry.children() if entry.tag == der.TAG_SEQUENCE else []
        if len(fields) != 2:
            raise PkiError("SGX extension entry is not an (OID, value) pair")
        out[fields[0].as_oid()] = fields[1]
    return out


def _need(pairs: dict[str, der.Element], oid: str) -> der.Element:
    try:
        return pairs[oid]
    except KeyError:
        raise PkiError(f"SGX extension lacks {oid}") from None


def decode(data: bytes) -> PckExtension:
    """Parse the extension value; raises PkiError when a required field is absent or bad."""
    top, end = der.read_one(data)
    if end != len(data):
        raise PkiError("trailing bytes after the SGX extension")
    pairs = _pairs(top)
    tcb = _pairs(_need(pairs, _TCB))
    config = _pairs(pairs[_CONFIGURATION]) if _CONFIGURATION in pairs else {}
    instance = pairs.get(_PLATFORM_INSTANCE_ID)

    def flag(oid: str) -> bool:
        element = config.get(oid)
        return element is not None and element.value not in (b"", b"\x00")

    return PckExtension(
        ppid=_need(pairs, _PPID).value,
        cpusvn=_need(tcb, _CPUSVN).value,
        pcesvn=_need(tcb, _PCESVN).as_int(),
        pce_id=_need(pairs, _PCEID).value,
        fmspc=_need(pairs, _FMSPC).value,
        sgx_type=_need(pairs, _SGX_TYPE).as_int(),
        platform_instance_id=instance.value if instance is not None else None,
        dynamic_platform=flag(_DYNAMIC_PLATFORM),
        cached_keys=flag(_CACHED_KEYS),
        smt_enabled=flag(_SMT_ENABLED),
    )
