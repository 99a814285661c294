"""Just enough DER (X.690) to write and read the Intel SGX PCK certificate extension.

Only the types that extension uses: SEQUENCE, OBJECT IDENTIFIER, INTEGER, OCTET STRING,
ENUMERATED and BOOLEAN, all in definite-length form. No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from tdx_boot_attest.tdxsim.errors import PkiError

TAG_BOOLEAN = 0x01
TAG_INTEGER = 0x02
TAG_OCTET_STRING = 0x04
TAG_OID = 0x06
TAG_ENUMERATED = 0x0A
TAG_SEQUENCE = 0x30


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, value: bytes) -> bytes:
    """One tag-length-value element. Raises nothing."""
    return bytes([tag]) + _length(len(value)) + value


def sequence(*items: bytes) -> bytes:
    """A SEQUENCE of already encoded elements. Raises nothing."""
    return tlv(TAG_SEQUENCE, b"".join(items))


def oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER from its dotted form; raises PkiError for a malformed OID."""
    try:
        arcs = [int(part) for part in dotted.split(".")]
    except ValueError:
        raise PkiError(f"malformed OID {dotted!r}") from None
    if len(arcs) < 2 or arcs[0] > 2 or any(a < 0 for a in arcs):
        raise PkiError(f"malformed OID {dotted!r}")
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        body.extend(reversed(chunk))
    return tlv(TAG_OID, bytes(body))


def _twos_complement(value: int) -> bytes:
    size = max(1, (value.bit_length() + 8) // 8)
    return value.to_bytes(size, "big", signed=True)


def integer(value: int) -> bytes:
    """A minimal two's-complement INTEGER (255 encodes as 02 02 00 FF). Raises nothing."""
    return tlv(TAG_INTEGER, _twos_complement(value))


def enumerated(value: int) -> bytes:
    """An ENUMERATED value. Raises nothing."""
    return tlv(TAG_ENUMERATED, _twos_complement(value))


def octet_string(value: bytes) -> bytes:
    """An OCTET STRING. Raises nothing."""
    return tlv(TAG_OCTET_STRING, value)


def boolean(value: bool) -> bytes:
    """A DER BOOLEAN (TRUE is 0xFF). Raises nothing."""
    return tlv(TAG_BOOLEAN, b"\xff" if value else b"\x00")


@dataclass(frozen=True, slots=True)
class Element:
    """One decoded element: its tag and raw value bytes."""

    tag: int
    value: bytes

    def children(self) -> list[Element]:
        """Decode the value as a run of elements; raises PkiError when malformed."""
        return read_all(self.value)

    def as_oid(self) -> str:
        """Dotted OID text; raises PkiError when the element is not an OID."""
        if self.tag != TAG_OID or not self.value:
            raise PkiError("expected an OBJECT IDENTIFIER")
        first = self.value[0]
        arcs = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
        acc = 0
        for byte in self.value[1:]:
            acc = (acc << 7) | (byte & 0x7F)
            if not byte & 0x80:
                arcs.append(acc)
                acc = 0
        return ".".join(str(a) for a in arcs)

    def as_int(self) -> int:
        """The value of an INTEGER or ENUMERATED; raises PkiError for other tags."""
        if self.tag not in (TAG_INTEGER, TAG_ENUMERATED) or not self.value:
            raise PkiError("expected an INTEGER")
        return int.from_bytes(self.value, "big", signed=True)


def read_one(data: bytes, offset: int = 0) -> tuple[Element, int]:
    """Decode the element at ``offset``; returns it and the next offset. Raises PkiError."""
    if offset + 2 > len(data):
        raise PkiError("truncated DER element")
    tag = data[offset]
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise PkiError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    end = pos + length
    if end > len(data):
        raise PkiError("truncated DER element")
    return Element(tag, data[pos:end]), end


def read_all(data: bytes) -> list[Element]:
    """Decode consecutive elements filling ``data`` exactly; raises PkiError."""
    out: list[Element] = []
    offset = 0
    while offset < len(data):
        element, offset = read_one(data, offset)
        out.append(element)
    return out
