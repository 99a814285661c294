"""Platform policy: what a verified quote's TDX module and TD configuration must be.

Four optional pins, each "not checked unless set", each refused with its own reason:

* ``allowed_mrseams``: MRSEAM (the TDX module's measurement) must be one of these;
* ``xfam_value`` / ``xfam_mask``: XFAM (the extended CPU features the TD may use) masked
  with the mask must equal the value (no mask: the whole field must equal the value);
* ``td_attributes_value`` / ``td_attributes_mask``: the same for the TD attributes (which
  fixed bits must be set, which clear: DEBUG, SEPT_VE_DISABLE, PKS, KL, PERFMON, ...);
* ``minimum_tee_tcb_svn``: every one of the 16 TEE_TCB_SVN components must be at least
  the minimum's (the TDX module's and its loader's security versions).

Values are hex of the bytes as they sit in the quote (as ``tdx-boot-agent quote`` and
``tdx-attest-server image show`` print them), so 64-bit fields are little-endian. The
checks run on a quote only after DCAP has shown it is genuine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from tdx_boot_attest.agent.protocol import Reason
from tdx_boot_attest.server.errors import AttestationRefused, ConfigurationError

if TYPE_CHECKING:
    from tdx_boot_attest.server.quote import TdQuote

MRSEAM_BYTES: Final = 48
FLAGS_BYTES: Final = 8
TEE_TCB_SVN_BYTES: Final = 16
# Bit numbers (of the little-endian 64-bit field) named in refusals.
TD_ATTRIBUTE_BITS: Final = {
    0: "DEBUG",
    28: "SEPT_VE_DISABLE",
    30: "PKS",
    31: "KL",
    63: "PERFMON",
}
XFAM_BITS: Final = {
    0: "x87",
    1: "SSE",
    2: "AVX",
    3: "MPX_BNDREGS",
    4: "MPX_BNDCSR",
    5: "AVX512_OPMASK",
    6: "AVX512_ZMM_HI256",
    7: "AVX512_HI16_ZMM",
    8: "PT",
    9: "PKRU",
    11: "CET_U",
    12: "CET_S",
    14: "ULI",
    15: "LBR",
    17: "AMX_TILECFG",
    18: "AMX_TILEDATA",
}


@dataclass(frozen=True, slots=True)
class MaskedValue:
    """``(field & mask) == value`` for an 8-byte field, byte by byte."""

    value: bytes
    mask: bytes

    def differing_bits(self, actual: bytes) -> list[int]:
        """Bit numbers (little-endian) where ``actual`` breaks the rule. Raises nothing."""
        wanted = int.from_bytes(self.value, "little")
        mask = int.from_bytes(self.mask, "little")
        got = int.from_bytes(actual, "little")
        wrong = (got ^ wanted) & mask
        return [bit for bit in range(8 * len(self.mask)) if wrong >> bit & 1]


@dataclass(frozen=True, slots=True)
class PlatformPolicy:
    """The parsed pins; an empty field means "not checked"."""

    mrseams: frozenset[str] = frozenset()
    xfam: MaskedValue | None = None
    td_attributes: MaskedValue | None = None
    minimum_tee_tcb_svn: bytes | None = None

    @classmethod
    def parse(
        cls,
        *,
        allowed_mrseams: Iterable[str] = (),
        xfam_value: str = "",
        xfam_mask: str = "",
        td_attributes_value: str = "",
        td_attributes_mask: str = "",
        minimum_tee_tcb_svn: str = "",
    ) -> PlatformPolicy:
        """Parse the settings' text. Raises ConfigurationError naming the bad setting."""
        mrseams = frozenset(
            _hex("allowed_mrseams", text, MRSEAM_BYTES).hex() for text in allowed_mrseams
        )
        minimum = (
            _hex("minimum_tee_tcb_svn", minimum_tee_tcb_svn, TEE_TCB_SVN_BYTES)
            if minimum_tee_tcb_svn.strip()
            else None
        )
        return cls(
            mrseams=mrseams,
            xfam=_masked("xfam", xfam_value, xfam_mask),
            td_attributes=_masked("td_attributes", td_attributes_value, td_attributes_mask),
            minimum_tee_tcb_svn=minimum,
        )


def _hex(setting: str, text: str, size: int) -> bytes:
    cleaned = text.strip().lower().removeprefix("0x")
    try:
        raw = bytes.fromhex(cleaned)
    except ValueError:
        raise ConfigurationError(f"{setting}: {text!r} is not hexadecimal") from None
    if len(raw) != size:
        raise ConfigurationError(
            f"{setting}: {text!r} must be {size} bytes ({2 * size} hex digits), got {len(raw)}"
        )
    return raw


def _masked(name: str, value_text: str, mask_text: str) -> MaskedValue | None:
    if not value_text.strip():
        if mask_text.strip():
            raise ConfigurationError(f"{name}_mask is set without {name}_value")
        return None
    value = _hex(f"{name}_value", value_text, FLAGS_BYTES)
    mask = (
        _hex(f"{name}_mask", mask_text, FLAGS_BYTES) if mask_text.strip() else b"\xff" * FLAGS_BYTES
    )
    if any(v & ~m for v, m in zip(value, mask, strict=True)):
        raise ConfigurationError(
            f"{name}_value {value.hex()} sets bits outside {name}_mask {mask.hex()}"
        )
    return MaskedValue(value=value, mask=mask)


def check_platform_policy(quote: TdQuote, policy: PlatformPolicy) -> None:
    """Apply every pin that is set to the DCAP-verified ``quote``.

    Raises AttestationRefused with mrseam_rejected, xfam_rejected, td_attributes_rejected
    or tee_tcb_svn_too_low, naming what differs.
    """
    if policy.mrseams and quote.mrseam not in policy.mrseams:
        raise AttestationRefused(
            f"MRSEAM {quote.mrseam} is not an allowed TDX module "
            f"({len(policy.mrseams)} allowed; see allowed_mrseams)",
            Reason.MRSEAM_REJECTED,
        )
    if policy.xfam is not None:
        _check_masked("XFAM", quote.xfam, policy.xfam, XFAM_BITS, Reason.XFAM_REJECTED)
    if policy.td_attributes is not None:
        _check_masked(
            "TD attributes",
            quote.td_attributes,
            policy.td_attributes,
            TD_ATTRIBUTE_BITS,
            Reason.TD_ATTRIBUTES_REJECTED,
        )
    if policy.minimum_tee_tcb_svn is not None:
        _check_tee_tcb_svn(quote.tee_tcb_svn, policy.minimum_tee_tcb_svn)


def _check_masked(
    what: str, actual: bytes, rule: MaskedValue, names: Mapping[int, str], reason: Reason
) -> None:
    wrong = rule.differing_bits(actual)
    if not wrong:
        return
    bits = ", ".join(f"bit {bit} ({names[bit]})" if bit in names else f"bit {bit}" for bit in wrong)
    raise AttestationRefused(
        f"{what} {actual.hex()} differ from the required {rule.value.hex()} "
        f"(mask {rule.mask.hex()}) in {bits}",
        reason,
    )


def _check_tee_tcb_svn(actual: bytes, minimum: bytes) -> None:
    low = [
        index for index, (got, least) in enumerate(zip(actual, minimum, strict=True)) if got < least
    ]
    if not low:
        return
    components = ", ".join(f"component {i}: {actual[i]} < {minimum[i]}" for i in low)
    raise AttestationRefused(
        f"TEE_TCB_SVN {actual.hex()} is below the minimum {minimum.hex()} ({components}); "
        "update the host's TDX module",
        Reason.TEE_TCB_SVN_TOO_LOW,
    )
