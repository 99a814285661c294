"""Platform administration: store, read and list captured platform profiles."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from tdx_boot_attest.agent.measurement.platform import PlatformProfile
from tdx_boot_attest.server.db.models import Platform
from tdx_boot_attest.server.errors import Conflict, NotFound


def add_platform(session: Session, profile: PlatformProfile, now: datetime) -> Platform:
    """Store ``profile`` under its name. Raises Conflict when the name is taken."""
    if session.get(Platform, profile.name) is not None:
        raise Conflict(
            f"a platform named {profile.name!r} exists; a changed host type (firmware, QEMU "
            "version, VM shape) is a new platform: give it a new name"
        )
    row = Platform(
        name=profile.name,
        profile_json=json.dumps(profile.to_json(), sort_keys=True),
        profile_sha384=profile.digest().hex(),
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


def get_platform(session: Session, name: str) -> PlatformProfile:
    """The stored profile called ``name``. Raises NotFound.

    A stored profile that no longer reads is a database fault: PlatformProfileError.
    """
    row = session.get(Platform, name)
    if row is None:
        raise NotFound(
            f"no platform named {name!r} (tdx-attest-server platform list; add one with "
            "platform add NAME --from-quote Q --event-log L)"
        )
    return PlatformProfile.from_json(json.loads(row.profile_json))


def list_platforms(session: Session) -> list[Platform]:
    """Every stored platform, by name. Raises SQLAlchemy errors."""
    return list(session.scalars(select(Platform).order_by(Platform.name)))
