"""Revision 0006 (stateless boot nonces) on both databases: up and down cleanly."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from tdx_boot_attest.server.db.engine import make_engine
from tdx_boot_attest.server.db.migrate import alembic_config

NEW_TABLES = {"spent_nonces", "server_secrets"}


def tables(url: str) -> set[str]:
    engine = make_engine(url, pool_size=1)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_stateless_nonce_revision_downgrades_and_upgrades(database_url: str) -> None:
    config = alembic_config(database_url)
    assert tables(database_url) >= NEW_TABLES
    command.downgrade(config, "0005_identity_binding")
    remaining = tables(database_url)
    assert not NEW_TABLES & remaining
    assert {"nonces", "boot_attestations", "servers"} <= remaining
    command.upgrade(config, "head")
    assert tables(database_url) >= NEW_TABLES
