"""Random values shared by every replica of one database (``server_secrets``)."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from tdx_boot_attest.server.db.models import ServerSecret


def shared_secret(engine: Engine, name: str, size: int, now: datetime) -> bytes:
    """The secret called ``name``: made (``size`` random bytes) by the first replica asking.

    Concurrent first requests agree: only one insert wins, and every caller reads the
    stored value. Raises SQLAlchemy errors if the database fails.
    """
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(ServerSecret)
        .values(name=name, value=secrets.token_bytes(size), created_at=now)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    with engine.begin() as conn:
        conn.execute(statement)
        value = conn.scalar(select(ServerSecret.value).where(ServerSecret.name == name))
    if value is None:  # pragma: no cover - the row was just written or found
        raise RuntimeError(f"server secret {name} is missing")
    return bytes(value)
