"""The fleet revisions on both databases: match the models, downgrade and upgrade cleanly,
and 0004 canonicalises the GPU uuids already stored."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tdx_boot_attest.server.db import fleet as fleet_models
from tdx_boot_attest.server.db import models as boot_models  # noqa: F401 - registers the boot tables
from tdx_boot_attest.server.db.base import Base
from tdx_boot_attest.server.db.engine import make_engine
from tdx_boot_attest.server.db.migrate import alembic_config

FLEET_TABLES = {
    "miners",
    "miner_tokens",
    "used_signatures",
    "servers",
    "server_gpus",
    "runtime_attestations",
}


def tables(url: str) -> set[str]:
    engine = make_engine(url, pool_size=1)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    assert fleet_models.Server.__tablename__ == "servers"
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_fleet_revision_downgrades_and_upgrades(database_url: str) -> None:
    config = alembic_config(database_url)
    assert tables(database_url) >= FLEET_TABLES
    command.downgrade(config, "0001_boot")
    remaining = tables(database_url)
    assert not FLEET_TABLES & remaining
    assert {"nonces", "images", "boot_attestations"} <= remaining
    command.upgrade(config, "head")
    assert tables(database_url) >= FLEET_TABLES


def test_identity_revision_canonicalises_gpu_uuids(database_url: str) -> None:
    """0004 rewrites stored GPU uuids in NVIDIA's form, except where that form is taken."""
    config = alembic_config(database_url)
    command.downgrade(config, "0003_event_log")
    engine = make_engine(database_url, pool_size=1)
    uuids = ["gpu-AB12", "GPU-ab12", "Gpu-CD34", "mig-EF56", "Other-UUID", "GPU-77aa"]
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text("INSERT INTO miners (hotkey, created_at) VALUES ('5miner', :t)"),
                {"t": datetime(2026, 1, 1)},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO servers (id, miner_hotkey, name, host, created_at) "
                    "VALUES ('node-1', '5miner', 'node-1', '10.0.0.1', :t)"
                ),
                {"t": datetime(2026, 1, 1)},
            )
            for index, uuid in enumerate(uuids):
                conn.execute(
                    sa.text(
                        "INSERT INTO server_gpus (uuid, server_id, name, memory, clock_rate, "
                        "device_index) VALUES (:uuid, 'node-1', 'H100', 1, 1.0, :index)"
                    ),
                    {"uuid": uuid, "index": index},
                )
        command.upgrade(config, "head")
        with engine.connect() as conn:
            stored = conn.execute(
                sa.text("SELECT device_index, uuid FROM server_gpus ORDER BY device_index")
            ).all()
            identity = conn.execute(sa.text("SELECT identity_key FROM servers")).scalar_one()
    finally:
        engine.dispose()
    assert [uuid for _, uuid in stored] == [
        "gpu-AB12",  # its canonical form belongs to the next row: left as it is
        "GPU-ab12",
        "GPU-cd34",
        "MIG-ef56",
        "other-uuid",
        "GPU-77aa",
    ]
    assert identity is None
