"""Fixtures for the simulator tests: a frozen clock and simulated platforms."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from tdx_boot_attest.tdxsim.state import SimState

# Every simulated state in these tests is made "now" = FIXED_NOW, so results never depend
# on the wall clock.
FIXED_NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
FIXED_NOW_SECS = int(FIXED_NOW.timestamp())
REPORT_DATA = bytes(range(64))


def fixed_clock() -> dt.datetime:
    return FIXED_NOW


@pytest.fixture(scope="session")
def shared_state(tmp_path_factory: pytest.TempPathFactory) -> SimState:
    """A platform shared by tests that only read it (never revoke or re-issue on it)."""
    return SimState.init(tmp_path_factory.mktemp("shared-sim"), seed=7, clock=fixed_clock)


@pytest.fixture
def make_state(tmp_path: Path) -> Callable[..., SimState]:
    """Make a fresh platform for a test that changes it."""

    def make(seed: int = 1, **kwargs: object) -> SimState:
        return SimState.init(tmp_path / f"sim-{seed}", seed=seed, clock=fixed_clock, **kwargs)  # type: ignore[arg-type]

    return make
