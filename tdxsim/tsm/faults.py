"""Faults the simulated TDX provider can be told to produce, and their text form.

The same spec strings work as CLI flags (``tdxsim mount --fault outblob=EIO*2``), as lines
written to the FUSE mount's control file, and through :meth:`FaultPlan.apply`:

``outblob=ERRNO[*N]``
    the next N report generations (outblob reads that reach the provider) fail with ERRNO:
    EBUSY (a previous GetQuote still in flight), EIO (GetQuote hypercall failed),
    ETIMEDOUT (the host's quoting service did not answer), EINTR, ENOMEM, ...
``race[*N]``
    before each of the next N outblob reads another writer stores different 64 bytes in
    the entry's inblob, so generation moves past what the reader wrote.

A quote request that timed out leaves the host's quote buffer in flight, after which the
kernel answers EBUSY until the host finishes: ``outblob=ETIMEDOUT`` then
``outblob=EBUSY*N`` plays that sequence.
``delay=SECONDS``
    every report generation stalls this long (until cleared with ``delay=0``).
``provider=NAME`` / ``provider=none``
    the registered TSM provider reports NAME (e.g. ``sev_guest``), or none is registered
    (mkdir and outblob fail with ENXIO, provider reads fail with ENXIO).
``clear``
    drop every pending fault, restore provider ``tdx_guest`` and no delay.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from tdx_boot_attest.tdxsim.tsm.errors import errno_from_name

TDX_PROVIDER = "tdx_guest"


class FaultSpecError(ValueError):
    """A fault spec string cannot be parsed; the message names the offending spec."""


@dataclass(frozen=True, slots=True)
class FaultSnapshot:
    """What is pending, for display and for tests."""

    report_errors: tuple[int, ...]
    races: int
    delay_seconds: float
    provider: str | None


class FaultPlan:
    """Thread-safe set of pending faults, consumed by the device model as calls happen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._report_errors: deque[int] = deque()
        self._races = 0
        self._delay = 0.0
        self._provider: str | None = TDX_PROVIDER

    # -- arming ---------------------------------------------------------------------------
    def fail_report(self, err: int, times: int = 1) -> None:
        """Make the next ``times`` report generations fail with ``err``. Raises ValueError."""
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._report_errors.extend([err] * times)

    def race(self, times: int = 1) -> None:
        """Have another writer rewrite inblob before each of the next ``times`` outblob reads."""
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._races += times

    def set_delay(self, seconds: float) -> None:
        """Stall every report generation by ``seconds`` (0 disables). Raises ValueError."""
        if seconds < 0:
            raise ValueError("delay must not be negative")
        with self._lock:
            self._delay = seconds

    def set_provider(self, name: str | None) -> None:
        """Register provider ``name``, or unregister it with None. Raises nothing."""
        with self._lock:
            self._provider = name

    def clear(self) -> None:
        """Drop every pending fault and restore the tdx_guest provider. Raises nothing."""
        with self._lock:
            self._report_errors.clear()
            self._races = 0
            self._delay = 0.0
            self._provider = TDX_PROVIDER

    def apply(self, spec: str) -> None:
        """Arm one fault from its text form (see the module docstring); raises FaultSpecError."""
        text = spec.strip()
        if not text or text.startswith("#"):
            return
        key, _, value = text.partition("=")
        key = key.strip().lower()
        value = value.strip()
        try:
            if key == "clear" and not value:
                self.clear()
            elif key == "outblob":
                name, times = _split_times(value)
                self.fail_report(errno_from_name(name), times)
            elif (key == "race" or key.startswith("race*")) and not value:
                _, times = _split_times(key)
                self.race(times)
            elif key == "delay":
                self.set_delay(float(value))
            elif key == "provider" and value:
                self.set_provider(None if value.lower() == "none" else value)
            else:
                raise ValueError("unknown fault")
        except ValueError as exc:
            raise FaultSpecError(f"bad fault spec {spec.strip()!r}: {exc}") from None

    def apply_text(self, text: str) -> None:
        """Apply one spec per line (commas also separate); raises FaultSpecError."""
        for line in text.replace(",", "\n").splitlines():
            self.apply(line)

    # -- consuming (the device model calls these) ----------------------------------------
    def take_report_error(self) -> int | None:
        """Pop the next report-generation errno, if one is armed. Raises nothing."""
        with self._lock:
            return self._report_errors.popleft() if self._report_errors else None

    def take_race(self) -> bool:
        """Consume one armed race, if any. Raises nothing."""
        with self._lock:
            if self._races == 0:
                return False
            self._races -= 1
            return True

    @property
    def delay_seconds(self) -> float:
        """The stall applied to every report generation. Raises nothing."""
        with self._lock:
            return self._delay

    @property
    def provider(self) -> str | None:
        """The registered provider's name, or None when none is registered. Raises nothing."""
        with self._lock:
            return self._provider

    def snapshot(self) -> FaultSnapshot:
        """A consistent copy of what is pending. Raises nothing."""
        with self._lock:
            return FaultSnapshot(
                tuple(self._report_errors), self._races, self._delay, self._provider
            )

    def describe(self) -> str:
        """The pending faults in spec form, one per line (what the control file reads back)."""
        snap = self.snapshot()
        lines = [f"provider={snap.provider if snap.provider is not None else 'none'}"]
        lines.append(f"delay={snap.delay_seconds:g}")
        if snap.races:
            lines.append(f"race*{snap.races}")
        lines.extend(f"outblob={_errno_name(err)}" for err in snap.report_errors)
        return "\n".join(lines) + "\n"


def _split_times(value: str) -> tuple[str, int]:
    name, sep, count = value.partition("*")
    if not sep:
        return name, 1
    times = int(count)
    if times < 1:
        raise ValueError("count must be at least 1")
    return name, times


def _errno_name(err: int) -> str:
    import errno

    return errno.errorcode.get(err, str(err))
