"""Client-supplied bookkeeping fields and other audit text: what may be stored, and how.

No I/O. The audit row of an attempt must always be writable, whatever the client sent:
text a database cannot store (NUL, which PostgreSQL refuses; a lone surrogate, which is
not UTF-8) is refused here with a message naming the field, and the amount stored per
attempt is capped, so an unauthenticated request cannot fill the database.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tdx_boot_attest.agent.protocol import Reason
from tdx_boot_attest.server.errors import RequestInvalid

VM_NAME_FIELD = "vm_name"
VM_NAME_MAX_CHARS = 255
# Messages and addresses are the server's own text, but may quote client input.
MESSAGE_MAX_CHARS = 1000
FIELD_LABEL_MAX_CHARS = 40


@dataclass(frozen=True, slots=True)
class BookkeepingLimits:
    """How much bookkeeping one attempt may carry (settings bookkeeping_max_*)."""

    max_fields: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class Bookkeeping:
    """Bookkeeping fields that passed the checks, in the form they are stored."""

    json_text: str | None
    vm_name: str | None


NO_BOOKKEEPING = Bookkeeping(json_text=None, vm_name=None)


def check_bookkeeping(fields: Mapping[str, Any], limits: BookkeepingLimits) -> Bookkeeping:
    """The storable form of ``fields`` (the body's fields other than quote, key and kem).

    Raises RequestInvalid (request_invalid) naming the field when there are more than
    ``limits.max_fields`` fields, when their JSON is over ``limits.max_bytes`` bytes, when
    a name or text holds NUL or a lone surrogate, or when vm_name is not a string of at
    most 255 characters.
    """
    if not fields:
        return NO_BOOKKEEPING
    if len(fields) > limits.max_fields:
        raise RequestInvalid(
            f"{len(fields)} bookkeeping fields; at most {limits.max_fields} are accepted"
        )
    for name, value in fields.items():
        _check_text(name, name)
        _check_value(name, value)
    vm_name = fields.get(VM_NAME_FIELD)
    if vm_name is not None and (not isinstance(vm_name, str) or len(vm_name) > VM_NAME_MAX_CHARS):
        raise RequestInvalid(
            f"bookkeeping field {VM_NAME_FIELD!r} must be a string of at most "
            f"{VM_NAME_MAX_CHARS} characters"
        )
    text = json.dumps(dict(fields), sort_keys=True, ensure_ascii=False)
    size = len(text.encode("utf-8"))
    if size > limits.max_bytes:
        raise RequestInvalid(
            f"bookkeeping fields take {size} bytes as JSON; at most {limits.max_bytes} "
            f"are accepted (largest: {field_label(_largest(fields))})"
        )
    return Bookkeeping(json_text=text, vm_name=vm_name)


def storable_text(text: str | None, max_chars: int = MESSAGE_MAX_CHARS) -> str | None:
    """``text`` cut to ``max_chars`` with NUL and lone surrogates escaped. Raises nothing."""
    if text is None:
        return None
    cut = text[:max_chars]
    if "\x00" in cut:
        cut = cut.replace("\x00", "\\x00")
    try:
        cut.encode("utf-8")
    except UnicodeEncodeError:
        cut = cut.encode("utf-8", "backslashreplace").decode("utf-8")
    return cut


def field_label(name: str) -> str:
    """A field name as a message can show it: quoted, escaped, bounded. Raises nothing."""
    shown = ascii(name[:FIELD_LABEL_MAX_CHARS])
    return shown if len(name) <= FIELD_LABEL_MAX_CHARS else shown + "..."


def _check_value(field: str, value: Any) -> None:
    if isinstance(value, str):
        _check_text(field, value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_text(field, str(key))
            _check_value(field, item)
    elif isinstance(value, list):
        for item in value:
            _check_value(field, item)


def _check_text(field: str, text: str) -> None:
    if "\x00" in text:
        raise RequestInvalid(
            f"bookkeeping field {field_label(field)} holds NUL, which cannot be stored",
            Reason.REQUEST_INVALID,
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestInvalid(
            f"bookkeeping field {field_label(field)} holds a lone surrogate "
            "(not valid Unicode text), which cannot be stored",
            Reason.REQUEST_INVALID,
        ) from None


def _largest(fields: Mapping[str, Any]) -> str:
    return max(fields, key=lambda name: len(json.dumps(fields[name], ensure_ascii=False)))
