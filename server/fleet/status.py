"""A server's runtime attestation status, decided from its attempts and the clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

Status = Literal["never_attested", "verified", "failed", "stale"]


@dataclass(frozen=True, slots=True)
class AttestationFacts:
    """What the decision needs: when the latest attempt happened and whether it passed,
    and when the server last passed."""

    latest_verified: bool | None  # None: never attempted
    last_success_at: datetime | None


def decide_status(facts: AttestationFacts, now: datetime, stale_after: timedelta) -> Status:
    """The status, in this order of precedence. Raises nothing.

    1. ``never_attested``: no attempt at all;
    2. ``stale``: the last success is older than ``stale_after`` (whatever came after it);
    3. ``failed``: the latest attempt was refused;
    4. ``verified``: the latest attempt passed, recently enough.
    """
    if facts.latest_verified is None:
        return "never_attested"
    if facts.last_success_at is not None and now - facts.last_success_at > stale_after:
        return "stale"
    if not facts.latest_verified:
        return "failed"
    return "verified"
