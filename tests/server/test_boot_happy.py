"""An approved image's quote gets a sealed key that opens to its passphrase (real HTTP)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from tdx_boot_attest.server.db.engine import make_engine, make_sessionmaker, session_scope
from tdx_boot_attest.server.db.models import BootAttestation
from tdx_boot_attest.tdxsim.state import SimState
from tests.support.sim_server import sim_server


def test_approved_image_gets_sealed_passphrase(
    tmp_path: Path, database_url: str, sim: SimState
) -> None:
    with sim_server(tmp_path, database_url, sim) as srv:
        passphrase = srv.register_image("golden")
        response, nonce, key = srv.boot(vm_name="vm-7")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["image"] == "golden"
        assert body["verified_at"].endswith("Z")
        assert key.open(body["sealed_key"], nonce) == passphrase
    sessions = make_sessionmaker(make_engine(database_url, pool_size=1))
    with session_scope(sessions) as session:
        row = session.scalars(select(BootAttestation)).one()
        assert (row.verdict, row.reason, row.image_name) == ("accepted", None, "golden")
        assert row.id == body["attestation_id"]
        assert row.vm_name == "vm-7"
        assert row.quote is not None and row.client_ip == "127.0.0.1"
        assert row.tcb_status == "UpToDate"
