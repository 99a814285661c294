"""Alembic migrations, shipped inside the package and run by ``tdx-attest-server migrate``."""
