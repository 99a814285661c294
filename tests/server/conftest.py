"""Fixtures of the server tests: both databases, a simulated platform, a log scan."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tdx_boot_attest.tdxsim.state import SimState
from tests.support.sim_server import PASSPHRASE_PREFIX


@pytest.fixture
def sim(tmp_path: Path) -> SimState:
    """A fresh simulated TDX platform (seed 0)."""
    return SimState.init(tmp_path / "sim", seed=0)


@pytest.fixture(autouse=True)
def no_passphrase_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test's captured log records must be free of registered passphrases."""
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        assert PASSPHRASE_PREFIX.decode() not in text, f"passphrase in log: {record.name}"
