"""Fixtures for the agent's unit tests: a synthetic quote and tdxsim's directory fake."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tdx_boot_attest.tdxsim.tsm.dirfake import DirFake
from tdx_boot_attest.tdxsim.tsm.model import TsmModel

MRTD = bytes(range(48))


def synthetic_quote(report_data: bytes, *, version: int = 4, td_attributes: int = 0) -> bytes:
    """A structurally valid TDX quote (header + TD report body, no signature) over 64 bytes."""
    header = struct.pack("<HHI", version, 2, 0x81) + bytes(40)
    body = bytearray(584)
    body[120:128] = td_attributes.to_bytes(8, "little")
    body[136:184] = MRTD
    for n in range(4):
        body[328 + 48 * n : 376 + 48 * n] = bytes([0x10 + n]) * 48
    body[520:584] = report_data
    if version == 5:
        return header + struct.pack("<HI", 2, 584) + bytes(body) + bytes(4)
    return header + bytes(body) + bytes(4)


@pytest.fixture
def tsm_fake(tmp_path: Path) -> Iterator[DirFake]:
    """tdxsim's configfs-tsm directory fake, quoting with synthetic_quote()."""
    yield DirFake(tmp_path / "tsm", TsmModel(synthetic_quote))
