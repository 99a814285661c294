"""Just enough TDX quote parsing for the agent's own checks and diagnostics (no I/O).

The agent does not verify quotes (the server does); it reads the TD report body to
show an operator the measurements a server will match, and to check that the quote
configfs-tsm returned carries the REPORTDATA it asked for.

The layout (offsets and sizes) is defined in :mod:`quote_layout`.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from tdx_boot_attest.agent import quote_layout as layout
from tdx_boot_attest.agent.errors import AgentError, LocalReason

# TD attributes bit 0: the TD runs in debug mode (its memory is readable by the host).
TD_ATTRIBUTES_DEBUG: Final = layout.TD_ATTRIBUTE_DEBUG
_MINIMUM_BYTES: Final = layout.HEADER_BYTES + layout.TD_REPORT10_BYTES
_TD_BODY_BYTES: Final = {
    layout.BODY_TD_REPORT10: layout.TD_REPORT10_BYTES,
    layout.BODY_TD_REPORT15: layout.TD_REPORT15_BYTES,
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
    if len(quote) < _MINIMUM_BYTES:
        raise QuoteFormatError(f"a TDX quote is at least {_MINIMUM_BYTES} bytes, got {len(quote)}")
    version, _key_type, tee_type = struct.unpack_from("<HHI", quote, 0)
    if tee_type != layout.TEE_TYPE_TDX:
        raise QuoteFormatError(f"TEE type is {tee_type:#x}, not TDX (0x81)")
    if version == 4:
        body_offset = layout.body_offset(4)
    elif version == 5:
        body_type, body_size = struct.unpack_from("<HI", quote, layout.HEADER_BYTES)
        expected = _TD_BODY_BYTES.get(body_type)
        if expected is None or body_size != expected:
            raise QuoteFormatError(f"quote v5 body type {body_type} size {body_size} is not TDX")
        body_offset = layout.body_offset(5)
        if len(quote) < body_offset + body_size:
            raise QuoteFormatError("quote v5 is shorter than its body")
    else:
        raise QuoteFormatError(f"quote version {version} is not 4 or 5")
    fields = {
        f.name: quote[body_offset + f.offset : body_offset + f.end]
        for f in layout.TD_REPORT10_FIELDS
    }
    return QuoteSummary(version=version, fields=fields)
