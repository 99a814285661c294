"""Fixtures of the fleet tests; a test module imports the ones it uses by name.

``fleet`` is parametrized over SQLite and PostgreSQL through ``database_url`` (from
tests/server/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tdxsim.state import SimState
from tests.support.fleet_env import FleetEnv, make_fleet_env
from tests.support.miner_keys import MinerKey


@pytest.fixture(scope="session")
def sim_state(tmp_path_factory: pytest.TempPathFactory) -> SimState:
    """One simulated TDX platform for the whole session."""
    return SimState.init(tmp_path_factory.mktemp("fleet-sim") / "state", seed=4)


@pytest.fixture
def fleet(database_url: str, sim_state: SimState, tmp_path: Path) -> FleetEnv:
    """The app on a fresh database with one approved image."""
    return make_fleet_env(database_url, sim_state, tmp_path)


@pytest.fixture
def alice(fleet: FleetEnv) -> MinerKey:
    """A registered miner."""
    return fleet.add_miner(MinerKey.from_seed(101))


@pytest.fixture
def bob(fleet: FleetEnv) -> MinerKey:
    """Another registered miner."""
    return fleet.add_miner(MinerKey.from_seed(202))
