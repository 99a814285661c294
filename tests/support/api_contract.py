"""The Servers API contract (servers-api-reference.txt) parsed into operations.

The reference is a text rendering of an API page: each operation has a ``curl -X METHOD
"https://host/path"`` line, then optional "Parameters" and "Request Body" tables whose
rows are ``| name | type ... | required | description |``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_CURL = re.compile(r'curl -X (GET|POST|PUT|PATCH|DELETE) "https?://[^/"]+(/[^"]*)"')
_ROW = re.compile(r"^\|(.+)\|\s*$")
_STATUS_ROW = re.compile(r"^\|\s*(\d{3})\s*\|")


@dataclass
class Operation:
    """One documented operation: its parameters and body fields (name -> required)."""

    method: str
    path: str
    parameters: dict[str, bool] = field(default_factory=dict)
    body: dict[str, bool] = field(default_factory=dict)
    statuses: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "parameters": self.parameters,
            "body": self.body,
            "statuses": self.statuses,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Operation:
        return cls(data["method"], data["path"], data["parameters"], data["body"], data["statuses"])


def parse_contract(text: str) -> list[Operation]:
    """Every operation of the reference, in document order. Raises ValueError if none."""
    operations: list[Operation] = []
    table: str | None = None
    for line in text.splitlines():
        match = _CURL.search(line)
        if match:
            operations.append(Operation(match.group(1), match.group(2)))
            table = None
            continue
        if not operations:
            continue
        stripped = line.strip()
        if stripped.startswith("| Parameter |"):
            table = "parameters"
        elif stripped.startswith("| Field |"):
            table = "body"
        elif stripped.startswith("| Status Code |"):
            table = "statuses"
        elif not stripped.startswith("|"):
            table = None
        elif table is not None and not stripped.startswith("|---"):
            _add_row(operations[-1], table, stripped)
    if not operations:
        raise ValueError("no operation found in the API reference")
    return operations


def _add_row(operation: Operation, table: str, line: str) -> None:
    if table == "statuses":
        status = _STATUS_ROW.match(line)
        if status:
            operation.statuses.append(int(status.group(1)))
        return
    row = _ROW.match(line)
    if row is None:
        return
    cells = [cell.strip() for cell in row.group(1).split("|")]
    name = cells[0]
    # "string | null" splits the type over two cells; "Yes"/"No" is the first such cell.
    required = next((cell == "Yes" for cell in cells[1:] if cell in {"Yes", "No"}), False)
    if table == "parameters":
        operation.parameters[name] = required
    else:
        operation.body[name] = required
