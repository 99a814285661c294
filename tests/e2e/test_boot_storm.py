"""A burst of complete boots against `serve --workers 2` on PostgreSQL: every request answered.

Each boot's nonce and attestation travel on one kept-alive connection, all boots at
once; every one must end with its key released exactly once, none dropped. (The figures
of a 2,000-boot storm are measured by bench/boot_storm.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tdx_boot_attest.tdxsim.state import SimState
from tests.support.databases import create_postgres_database, drop_postgres_database
from tests.support.live_server import live_server
from tests.support.storm import run_storm, summarise

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
PASSPHRASE = b"luks-pw-burst-4c2d19"
BOOTS = 200


def test_every_boot_of_a_burst_is_answered_and_released_once(tmp_path: Path) -> None:
    sim = SimState.init(tmp_path / "sim", seed=29)
    database_url = create_postgres_database()
    try:
        with live_server(
            tmp_path / "srv",
            database_url,
            trust_root=sim.path / "root_ca.der",
            collateral_file=sim.path / "collateral.json",
            extra_env={"TDX_ATTEST_LOG_LEVEL": "WARNING"},
            workers=2,
        ) as server:
            golden = tmp_path / "golden.quote"
            golden.write_bytes(sim.make_quote(bytes(64)))
            server.add_image("golden", passphrase=PASSPHRASE, quote_file=golden)
            port = int(server.base_url.rsplit(":", 1)[1])
            result = run_storm(port, sim, BOOTS, PASSPHRASE)
        figures = summarise(result, database_url, BOOTS)
    finally:
        drop_postgres_database(database_url)
    assert figures["lost"] == 0, figures["lost_kinds"]
    assert figures["errors"] == 0, figures["error_kinds"]
    assert figures["double_releases"] == 0
    assert figures["released"] == BOOTS
