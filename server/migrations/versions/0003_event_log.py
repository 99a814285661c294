"""Event logs: kept with every attempt, reference events kept with every image.

``boot_attestations.event_log`` / ``runtime_attestations.event_log`` hold the firmware
event log an agent sent (at most 256 KiB, agent.protocol.MAX_EVENT_LOG_BYTES), and
``differences`` the structured explanation of a measurement mismatch (JSON).
``images.reference_events`` holds the image's expected events (JSON, agent.eventlog's
event form) and ``reference_source`` where they came from.

Revision ID: 0003_event_log
Revises: 0002_fleet
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_event_log"
down_revision = "0002_fleet"
branch_labels = None
depends_on = None

_AUDIT_TABLES = ("boot_attestations", "runtime_attestations")


def upgrade() -> None:
    """Add the event-log columns."""
    for table in _AUDIT_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("event_log", sa.LargeBinary(), nullable=True))
            batch.add_column(sa.Column("differences", sa.Text(), nullable=True))
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("reference_events", sa.Text(), nullable=True))
        batch.add_column(sa.Column("reference_source", sa.String(256), nullable=True))


def downgrade() -> None:
    """Drop the event-log columns."""
    with op.batch_alter_table("images") as batch:
        batch.drop_column("reference_source")
        batch.drop_column("reference_events")
    for table in _AUDIT_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("differences")
            batch.drop_column("event_log")
