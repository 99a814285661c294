"""What a simulated TD shows its guest: quotes through configfs-tsm, and the firmware's
event log.

On a TD the two live apart: ``/sys/kernel/config/tsm/report/`` and
``/sys/firmware/acpi/tables/data/CCEL`` (the log area the ACPI CCEL table describes,
padded, readable by root only). The simulated device puts the log beside ``report/``, as
the file :data:`EVENT_LOG_FILE` (mode 0400) in the device's root, which readdir does not
list, so the root still looks like configfs-tsm's. Point the agent at it with
``[eventlog] path = ROOT/.tdxsim-ccel``. A profile that gives raw register values has no
boot and so no event log: the file is then absent, as on a kernel without CCEL support.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from tdx_boot_attest.tdxsim.profile import Profile
    from tdx_boot_attest.tdxsim.tsm.model import QuoteFn

EVENT_LOG_FILE: Final = ".tdxsim-ccel"
EVENT_LOG_MODE: Final = 0o400


@dataclass(frozen=True)
class SimulatedTd:
    """The hardware behind the device: a quote function and the firmware's event log
    (the padded CCEL, or None when the TD's profile has no boot)."""

    quote_fn: QuoteFn
    event_log: bytes | None


def simulated_td(
    state_dir: str | Path, profile: Profile, *, version: int = 4, debug: bool = False
) -> SimulatedTd:
    """A TD measured as ``profile`` on the simulator state at ``state_dir``.

    Raises StateError when the state cannot be loaded.
    """
    from tdx_boot_attest.tdxsim.state import SimState

    state = SimState.load(state_dir)

    def quote(report_data: bytes) -> bytes:
        return bytes(state.make_quote(report_data, profile, version=version, debug=debug))

    return SimulatedTd(quote, profile.event_log())
