"""Stateless boot nonces: the spent-nonce table and the shared secrets (the key salt).

Boot nonces are no longer stored when issued: they carry their expiry and a tag under a
key derived from the master key and a random salt kept in ``server_secrets``; an attempt
inserts its nonce into ``spent_nonces`` in the same transaction as its audit row.
Runtime nonces and boot nonces issued before this revision stay in ``nonces``.

Revision ID: 0006_stateless_nonces
Revises: 0005_identity_binding
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tdx_boot_attest.server.db.base import UtcDateTime

revision = "0006_stateless_nonces"
down_revision = "0005_identity_binding"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create spent_nonces and server_secrets."""
    op.create_table(
        "spent_nonces",
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("spent_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_spent_nonces")),
    )
    op.create_index(op.f("ix_spent_nonces_expires_at"), "spent_nonces", ["expires_at"])
    op.create_table(
        "server_secrets",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_server_secrets")),
    )


def downgrade() -> None:
    """Drop them (outstanding stateless nonces are then refused as unknown)."""
    op.drop_table("server_secrets")
    op.drop_index(op.f("ix_spent_nonces_expires_at"), table_name="spent_nonces")
    op.drop_table("spent_nonces")
