"""Protocol v2's identity binding, and GPU uuids in one canonical form.

``boot_attestations.identity_key`` is the per-boot Ed25519 public key (64 lowercase hex
characters) a v2 agent bound into its boot quote; null for a boot by an older agent.
``servers.identity_key`` is the key of the boot the server was registered from (unique:
one boot's key identifies at most one server); ``runtime_attestations.identity_key`` is
the key an attempt was held against (null: verified without the binding).

GPU uuids are stored in NVIDIA's form from now on (``GPU-``/``MIG-`` prefix upper case,
the rest lower case; any other uuid lower case). Existing rows are rewritten into that
form, except a row whose canonical form another row already holds (the same GPU
registered twice under different cases): it stays as it is, and the registry's check
of the canonical form still finds the GPU taken.

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
_PREFIXES = ("GPU", "MIG")


def _canonical_gpu_uuid(value: str) -> str:
    # The rule of server.fleet.schemas.normalise_gpu_uuid as of this revision (a migration
    # must keep doing what it did when it was written).
    prefix, dash, rest = value.partition("-")
    if dash and prefix.upper() in _PREFIXES:
        return f"{prefix.upper()}-{rest.lower()}"
    return value.lower()


def upgrade() -> None:
    """Add the identity-key columns and canonicalise GPU uuids."""
    for table in ("boot_attestations", "runtime_attestations", "servers"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("identity_key", IDENTITY_KEY, nullable=True))
    op.create_index("ux_servers_identity_key", "servers", ["identity_key"], unique=True)
    gpus = sa.table("server_gpus", sa.column("uuid", sa.String(128)))
    connection = op.get_bind()
    held = set(connection.execute(sa.select(gpus.c.uuid)).scalars())
    for uuid in sorted(held):
        canonical = _canonical_gpu_uuid(uuid)
        if canonical == uuid or canonical in held:
            continue
        connection.execute(sa.update(gpus).where(gpus.c.uuid == uuid).values(uuid=canonical))
        held.discard(uuid)
        held.add(canonical)


def downgrade() -> None:
    """Drop the identity-key columns (GPU uuids keep their canonical form)."""
    op.drop_index("ux_servers_identity_key", table_name="servers")
    for table in ("servers", "runtime_attestations", "boot_attestations"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("identity_key")
