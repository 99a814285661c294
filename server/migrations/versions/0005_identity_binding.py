"""Protocol v2's identity binding.

``boot_attestations.identity_key`` is the per-boot Ed25519 public key (64 lowercase hex
characters) a v2 agent bound into its boot quote; null for a boot by an older agent.
``servers.identity_key`` is the key of the boot the server was registered from (unique:
one boot's key identifies at most one server); ``runtime_attestations.identity_key`` is
the key an attempt was held against (null: verified without the binding).

Revision ID: 0005_identity_binding
Revises: 0004_platforms
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_identity_binding"
down_revision = "0004_platforms"
branch_labels = None
depends_on = None

IDENTITY_KEY = sa.String(64)


def upgrade() -> None:
    """Add the identity-key columns."""
    for table in ("boot_attestations", "runtime_attestations", "servers"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("identity_key", IDENTITY_KEY, nullable=True))
    op.create_index("ux_servers_identity_key", "servers", ["identity_key"], unique=True)


def downgrade() -> None:
    """Drop the identity-key columns."""
    op.drop_index("ux_servers_identity_key", table_name="servers")
    for table in ("servers", "runtime_attestations", "boot_attestations"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("identity_key")
