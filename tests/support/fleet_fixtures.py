"""Fixtures of the fleet tests (registered by tests/server/conftest.py).

``fleet`` and ``make_fleet`` run on SQLite and PostgreSQL through ``database_url``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tdx_boot_attest.tdxsim.state import SimState
from tests.support.fleet_env import FleetEnv, make_fleet_env
from tests.support.miner_keys import MinerKey

FleetFactory = Callable[..., FleetEnv]


@pytest.fixture(scope="session")
def sim_state(tmp_path_factory: pytest.TempPathFactory) -> SimState:
    """One simulated TDX platform for the whole session."""
    return SimState.init(tmp_path_factory.mktemp("fleet-sim") / "state", seed=4)


@pytest.fixture
def make_fleet(database_url: str, sim_state: SimState, tmp_path: Path) -> Iterator[FleetFactory]:
    """Build apps (settings as keyword arguments) on this test's database; closes them after."""
    made: list[FleetEnv] = []

    def build(**settings: Any) -> FleetEnv:
        env = make_fleet_env(database_url, sim_state, tmp_path / f"app{len(made)}", **settings)
        made.append(env)
        return env

    yield build
    for env in made:
        env.close()


@pytest.fixture
def fleet(make_fleet: FleetFactory) -> FleetEnv:
    """The app on a fresh database with one approved image."""
    return make_fleet()


@pytest.fixture
def alice(fleet: FleetEnv) -> MinerKey:
    """A registered miner."""
    return fleet.add_miner(MinerKey.from_seed(101))


@pytest.fixture
def bob(fleet: FleetEnv) -> MinerKey:
    """Another registered miner."""
    return fleet.add_miner(MinerKey.from_seed(202))
