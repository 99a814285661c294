"""Just enough TDX quote parsing for the agent's own checks and diagnostics (no I/O).

The agent does not verify quotes (the server does); it reads the TD report body to
show an operator the measurements a server will match, and to check that the quote
configfs-tsm returned carries the REPORTDATA it asked for.

Layout (Intel TDX DCAP quote v4/v5): a 48-byte header (version u16 LE, attestation key
type u16, TEE type u32 = 0x81 for TDX, ...), then in v4 the 584-byte TD 1.0 report body;
in v5 a body descriptor (type u16: 2 = TD 1.0, 3 = TD 1.5; size u32) before the body.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from tdx_boot_attest.agent.errors import AgentError, LocalReason

HEADER_BYTES: Final = 48
TEE_TYPE_TDX: Final = 0x81
TD10_BODY_BYTES: Final = 584
TD15_BODY_BYTES: Final = 648
_V5_DESCRIPTOR_BYTES: Final = 6
# TD attributes bit 0: the TD runs in debug mode (its memory is readable by the host).
TD_ATTRIBUTES_DEBUG: Final = 1

# Offsets inside the TD report body.
_FIELDS: Final = {
    "tee_tcb_svn": (0, 16),
    "mrseam": (16, 48),
    "mrsignerseam": (64, 48),
    "seam_attributes": (112, 8),
    "td_attributes": (120, 8),
    "xfam": (128, 8),
    "mrtd": (136, 48),
    "mrconfigid": (184, 48),
    "mrowner": (232, 48),
    "mrownerconfig": (280, 48),
    "rtmr0": (328, 48),
    "rtmr1": (376, 48),
    "rtmr2": (424, 48),
    "rtmr3": (472, 48),
    "report_data": (520, 64),
}


class QuoteFormatError(AgentError):
    """The bytes are not a TDX quote v4/v5 the agent can read."""

    exit_code = 3

    def __init__(self, message: str) -> None:
        super().__init__(LocalReason.QUOTE_UNREADABLE, message)


class QuoteSummary(NamedTuple):
    """The quote's version and its TD report fields, as raw bytes."""

    version: int
    fields: dict[str, bytes]

    @property
    def report_data(self) -> bytes:
        """REPORTDATA (64 bytes). Raises nothing."""
        return self.fields["report_data"]

    @property
    def debug(self) -> bool:
        """True when the TD attributes have the DEBUG bit set. Raises nothing."""
        return bool(int.from_bytes(self.fields["td_attributes"], "little") & TD_ATTRIBUTES_DEBUG)

    def as_hex(self) -> dict[str, str]:
        """Every field as lowercase hex, in the report's order. Raises nothing."""
        return {name: value.hex() for name, value in self.fields.items()}


def parse_quote(quote: bytes) -> QuoteSummary:
    """Read the header and TD report body of ``quote``; raises QuoteFormatError."""
    if len(quote) < HEADER_BYTES + TD10_BODY_BYTES:
        raise QuoteFormatError(f"a TDX quote is at least 632 bytes, got {len(quote)}")
    version, _key_type, tee_type = struct.unpack_from("<HHI", quote, 0)
    if tee_type != TEE_TYPE_TDX:
        raise QuoteFormatError(f"TEE type is {tee_type:#x}, not TDX (0x81)")
    if version == 4:
        body_offset = HEADER_BYTES
    elif version == 5:
        body_type, body_size = struct.unpack_from("<HI", quote, HEADER_BYTES)
        expected = {2: TD10_BODY_BYTES, 3: TD15_BODY_BYTES}.get(body_type)
        if expected is None or body_size != expected:
            raise QuoteFormatError(f"quote v5 body type {body_type} size {body_size} is not TDX")
        body_offset = HEADER_BYTES + _V5_DESCRIPTOR_BYTES
        if len(quote) < body_offset + body_size:
            raise QuoteFormatError("quote v5 is shorter than its body")
    else:
        raise QuoteFormatError(f"quote version {version} is not 4 or 5")
    fields = {
        name: quote[body_offset + offset : body_offset + offset + size]
        for name, (offset, size) in _FIELDS.items()
    }
    return QuoteSummary(version=version, fields=fields)
