"""Revision 0002 (fleet tables) on both databases: matches the models, downgrades cleanly."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import server.db.fleet
import server.db.models
from server.db.base import Base
from server.db.engine import make_engine
from server.db.migrate import alembic_config

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
    assert server.db.fleet.Server.__tablename__ == "servers"
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
