"""docs/protocol-vectors.json for the tests that check the code against it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS_PATH = Path(__file__).resolve().parents[2] / "docs" / "protocol-vectors.json"


def vector(name: str) -> dict[str, Any]:
    """The vector called ``name`` (its inputs and expected values, as published)."""
    vectors: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))["vectors"]
    found: dict[str, Any] = vectors[name]
    return found


def hex_bytes(value: str) -> bytes:
    """The bytes of a hex field."""
    return bytes.fromhex(value)
