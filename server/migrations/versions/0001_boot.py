"""Boot path: nonces, images, boot attestations, collateral cache.

Revision ID: 0001_boot
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tdx_boot_attest.server.db.base import UtcDateTime

revision = "0001_boot"
down_revision = None
branch_labels = None
depends_on = None

MEASUREMENT = sa.String(96)


def upgrade() -> None:
    """Create the boot path's tables."""
    op.create_table(
        "nonces",
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(128), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("consumed_at", UtcDateTime(), nullable=True),
        sa.Column("client_ip", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_nonces")),
    )
    op.create_index(op.f("ix_nonces_expires_at"), "nonces", ["expires_at"])
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("mrtd", MEASUREMENT, nullable=False),
        *[sa.Column(f"boot_rtmr{i}", MEASUREMENT, nullable=False) for i in range(4)],
        *[sa.Column(f"runtime_rtmr{i}", MEASUREMENT, nullable=False) for i in range(4)],
        sa.Column("mrconfigid", MEASUREMENT, nullable=True),
        sa.Column("mrowner", MEASUREMENT, nullable=True),
        sa.Column("sealed_passphrase", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("passphrase_rotated_at", UtcDateTime(), nullable=True),
        sa.Column("retired_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("name", name=op.f("uq_images_name")),
    )
    op.create_table(
        "boot_attestations",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("client_ip", sa.String(64), nullable=True),
        sa.Column("nonce", sa.String(64), nullable=True),
        sa.Column("image_id", sa.Integer(), nullable=True),
        sa.Column("image_name", sa.String(128), nullable=True),
        sa.Column("quote", sa.LargeBinary(), nullable=True),
        sa.Column("tcb_status", sa.String(64), nullable=True),
        sa.Column("advisory_ids", sa.Text(), nullable=True),
        sa.Column("mrtd", MEASUREMENT, nullable=True),
        *[sa.Column(f"rtmr{i}", MEASUREMENT, nullable=True) for i in range(4)],
        sa.Column("public_key_sha256", sa.String(64), nullable=True),
        sa.Column("kem", sa.String(32), nullable=True),
        sa.Column("vm_name", sa.String(255), nullable=True),
        sa.Column("bookkeeping", sa.Text(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_boot_attestations_image_id_images"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_boot_attestations")),
    )
    op.create_index(op.f("ix_boot_attestations_created_at"), "boot_attestations", ["created_at"])
    op.create_index(
        "ix_boot_attestations_client_ip_created_at",
        "boot_attestations",
        ["client_ip", "created_at"],
    )
    op.create_table(
        "collateral_cache",
        sa.Column("fmspc", sa.String(12), nullable=False),
        sa.Column("ca", sa.String(16), nullable=False),
        sa.Column("collateral_json", sa.Text(), nullable=False),
        sa.Column("issued_at", UtcDateTime(), nullable=False),
        sa.Column("next_update", UtcDateTime(), nullable=False),
        sa.Column("fetched_at", UtcDateTime(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("fmspc", "ca", name=op.f("pk_collateral_cache")),
    )


def downgrade() -> None:
    """Drop the boot path's tables."""
    op.drop_table("collateral_cache")
    op.drop_index("ix_boot_attestations_client_ip_created_at", table_name="boot_attestations")
    op.drop_index(op.f("ix_boot_attestations_created_at"), table_name="boot_attestations")
    op.drop_table("boot_attestations")
    op.drop_table("images")
    op.drop_index(op.f("ix_nonces_expires_at"), table_name="nonces")
    op.drop_table("nonces")
