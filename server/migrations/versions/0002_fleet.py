"""Fleet side: miners, miner API tokens, used signatures, servers, GPUs, runtime attestations.

Runtime nonces live in the boot path's ``nonces`` table under the scope
``runtime:<server id>``; they need no new column.

Revision ID: 0002_fleet
Revises: 0001_boot
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tdx_boot_attest.server.db.base import UtcDateTime

revision = "0002_fleet"
down_revision = "0001_boot"
branch_labels = None
depends_on = None

MEASUREMENT = sa.String(96)


def upgrade() -> None:
    """Create the fleet side's tables."""
    op.create_table(
        "miners",
        sa.Column("hotkey", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("hotkey", name=op.f("pk_miners")),
    )
    op.create_table(
        "miner_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("miner_hotkey", sa.String(64), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["miner_hotkey"],
            ["miners.hotkey"],
            name=op.f("fk_miner_tokens_miner_hotkey_miners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_miner_tokens")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_miner_tokens_token_sha256")),
    )
    op.create_index(op.f("ix_miner_tokens_miner_hotkey"), "miner_tokens", ["miner_hotkey"])
    op.create_table(
        "used_signatures",
        sa.Column("signature_sha256", sa.String(64), nullable=False),
        sa.Column("hotkey", sa.String(64), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("signature_sha256", name=op.f("pk_used_signatures")),
    )
    op.create_index(op.f("ix_used_signatures_expires_at"), "used_signatures", ["expires_at"])
    op.create_table(
        "servers",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("miner_hotkey", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("host", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("boot_attestation_id", sa.String(36), nullable=True),
        sa.Column("image_id", sa.Integer(), nullable=True),
        sa.Column("image_name", sa.String(128), nullable=True),
        sa.ForeignKeyConstraint(
            ["miner_hotkey"],
            ["miners.hotkey"],
            name=op.f("fk_servers_miner_hotkey_miners"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["boot_attestation_id"],
            ["boot_attestations.id"],
            name=op.f("fk_servers_boot_attestation_id_boot_attestations"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_servers_image_id_images"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_servers")),
    )
    op.create_index(op.f("ix_servers_miner_hotkey"), "servers", ["miner_hotkey"])
    op.create_index(op.f("ix_servers_host"), "servers", ["host"])
    op.create_table(
        "server_gpus",
        sa.Column("uuid", sa.String(128), nullable=False),
        sa.Column("server_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("memory", sa.BigInteger(), nullable=False),
        sa.Column("clock_rate", sa.Float(), nullable=False),
        sa.Column("device_index", sa.Integer(), nullable=False),
        sa.Column("major", sa.Integer(), nullable=True),
        sa.Column("minor", sa.Integer(), nullable=True),
        sa.Column("processors", sa.Integer(), nullable=True),
        sa.Column("sxm", sa.Boolean(), nullable=True),
        sa.Column("max_threads_per_processor", sa.Integer(), nullable=True),
        sa.Column("concurrent_kernels", sa.Boolean(), nullable=True),
        sa.Column("ecc", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(
            ["server_id"],
            ["servers.id"],
            name=op.f("fk_server_gpus_server_id_servers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_server_gpus")),
    )
    op.create_index(op.f("ix_server_gpus_server_id"), "server_gpus", ["server_id"])
    op.create_table(
        "runtime_attestations",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("server_id", sa.String(128), nullable=False),
        sa.Column("miner_hotkey", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("verified_at", UtcDateTime(), nullable=True),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("client_ip", sa.String(64), nullable=True),
        sa.Column("nonce", sa.String(64), nullable=True),
        sa.Column("image_name", sa.String(128), nullable=True),
        sa.Column("tcb_status", sa.String(64), nullable=True),
        sa.Column("mrtd", MEASUREMENT, nullable=True),
        *[sa.Column(f"rtmr{i}", MEASUREMENT, nullable=True) for i in range(4)],
        sa.Column("quote", sa.LargeBinary(), nullable=True),
        sa.Column("server_deleted_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runtime_attestations")),
    )
    op.create_index(
        "ix_runtime_attestations_server_id_created_at",
        "runtime_attestations",
        ["server_id", "created_at"],
    )


def downgrade() -> None:
    """Drop the fleet side's tables."""
    op.drop_index("ix_runtime_attestations_server_id_created_at", table_name="runtime_attestations")
    op.drop_table("runtime_attestations")
    op.drop_index(op.f("ix_server_gpus_server_id"), table_name="server_gpus")
    op.drop_table("server_gpus")
    op.drop_index(op.f("ix_servers_host"), table_name="servers")
    op.drop_index(op.f("ix_servers_miner_hotkey"), table_name="servers")
    op.drop_table("servers")
    op.drop_index(op.f("ix_used_signatures_expires_at"), table_name="used_signatures")
    op.drop_table("used_signatures")
    op.drop_index(op.f("ix_miner_tokens_miner_hotkey"), table_name="miner_tokens")
    op.drop_table("miner_tokens")
    op.drop_table("miners")
