"""Realistic event logs for tests: the simulator's measured boot of chosen components.

A boot of a synthetic kernel and initrd (named by labels) with a command line on the
simulator's ``qemu-tdvf`` platform (the real TDVF direct-boot log's firmware events),
measured by the calculator's digest rules, so a test can change one component and see
which event a verifier names: the kernel moves RTMR1, the initrd or the command line
RTMR2 (synthetic initrds all have one size, so the kernel's header does not move).
"""

from __future__ import annotations

from dataclasses import dataclass

from tdx_boot_attest.agent.eventlog import Event, replay
from tdx_boot_attest.tdxsim.measured_boot import (
    DEFAULT_PLATFORM,
    BootSpec,
    Component,
    SimulatedBoot,
    simulate,
)
from tdx_boot_attest.tdxsim.profile import Profile


@dataclass(frozen=True)
class Components:
    """What a test boot measures, by name: synthetic kernel and initrd labels, the command
    line."""

    kernel: str = "vmlinuz 6.1.0-test"
    initrd: str = "initrd.img 6.1.0-test"
    cmdline: str = "console=ttyS0 root=/dev/mapper/root ro"

    def boot(self) -> SimulatedBoot:
        """The simulated boot of these components (2 GiB on ``qemu-tdvf``)."""
        return simulate(
            BootSpec(
                platform=Component.builtin(DEFAULT_PLATFORM),
                kernel=Component.synthetic(self.kernel),
                initrd=Component.synthetic(self.initrd),
                cmdline=self.cmdline,
                memory="2G",
            )
        )


def direct_boot_events(components: Components | None = None) -> list[Event]:
    """The events of the boot of ``components`` (default: ``Components()``), in log order."""
    return list((components or Components()).boot().manifest.events)


def direct_boot_log(components: Components | None = None) -> bytes:
    """The CCEL bytes (records only, no padding) of that boot."""
    return (components or Components()).boot().event_log(padded=False)


def profile_for(events: list[Event], base: Profile | None = None) -> Profile:
    """``base`` (default: tdxsim's default profile) with the RTMRs the events replay to
    (raw register values: the caller sends the log it wants)."""
    rtmrs = [value.hex() for value in replay(events)]
    return (base or Profile.default()).with_rtmrs(rtmrs)
