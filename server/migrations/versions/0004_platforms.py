"""Platform profiles: host types captured once, used to compute images' measurements.

Revision ID: 0004_platforms
Revises: 0003_event_log
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tdx_boot_attest.server.db.base import UtcDateTime

revision = "0004_platforms"
down_revision = "0003_event_log"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the platforms table."""
    op.create_table(
        "platforms",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("profile_json", sa.Text(), nullable=False),
        sa.Column("profile_sha384", sa.String(96), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_platforms")),
    )


def downgrade() -> None:
    """Drop the platforms table."""
    op.drop_table("platforms")
