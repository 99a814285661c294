"""The database gate: fail fast while the database keeps requests waiting, probe, reopen."""

from __future__ import annotations

from tdx_boot_attest.server.db.availability import DatabaseGate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_fast_failures_leave_the_gate_open() -> None:
    gate = DatabaseGate(clock=Clock())
    gate.failed(waited_seconds=0.01)
    assert not gate.closed
    assert gate.admit()


def test_a_slow_failure_closes_it_until_a_probe_succeeds() -> None:
    clock = Clock()
    gate = DatabaseGate(slow_failure_seconds=1, probe_interval_seconds=1, clock=clock)
    gate.failed(waited_seconds=5)
    assert gate.closed
    assert [gate.admit() for _ in range(3)] == [False] * 3
    clock.now += 1
    assert gate.admit(), "one probe per interval goes through"
    assert not gate.admit()
    gate.failed(waited_seconds=5)
    clock.now += 1
    assert gate.admit()
    gate.succeeded()
    assert not _closed(gate)
    assert all(gate.admit() for _ in range(3))


def _closed(gate: DatabaseGate) -> bool:
    """The gate's state, read through a call: mypy would keep ``gate.closed`` narrowed
    to True from an earlier assert, as if succeeded() could not change it."""
    return gate.closed
