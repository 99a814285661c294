"""The runtime attestation status decision, alone (no database, injected times)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tdx_boot_attest.server.fleet.status import AttestationFacts, decide_status

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.mark.parametrize(
    ("latest_verified", "last_success_age", "expected"),
    [
        (None, None, "never_attested"),
        (True, timedelta(0), "verified"),
        (True, HOUR, "verified"),
        (True, HOUR + timedelta(seconds=1), "stale"),
        (False, None, "failed"),
        (False, timedelta(minutes=5), "failed"),
        (False, HOUR, "failed"),
        (False, HOUR + timedelta(seconds=1), "stale"),
    ],
)
def test_status_decision(
    latest_verified: bool | None, last_success_age: timedelta | None, expected: str
) -> None:
    last_success = None if last_success_age is None else NOW - last_success_age
    facts = AttestationFacts(latest_verified=latest_verified, last_success_at=last_success)
    assert decide_status(facts, NOW, HOUR) == expected
