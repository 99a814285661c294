"""The injected clock: a callable returning the current time as an aware UTC datetime."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The real time in UTC. Raises nothing."""
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC with a ``Z`` suffix. Raises nothing."""
    # isoformat, not strftime: it is several times cheaper, on every answer.
    return moment.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"
