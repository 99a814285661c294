"""The calculator against real TDX firmware logs (tests/assets/eventlog).

Every event whose input is in the log's own data is rebuilt from that input with the
calculator's builders (EFI variables from their GUID, name and value, BootOrder and
Boot#### from their value, separators, EFI actions, the TD HOB from the log's memory
size) and must carry the log's digest; the replay of the rebuilt list, with the log's
digests only for the inputs the log does not hold (the configuration volume, the ACPI
tables, the kernel image, the command line and initrd of the stub's tags), must equal
the log's replay. The GCE log is a shim/GRUB boot: only its variables, separators and
actions apply.
"""

from __future__ import annotations

import pytest

from tdx_boot_attest.agent.eventlog import (
    EV_EFI_ACTION,
    EV_EFI_HANDOFF_TABLES2,
    EV_EFI_VARIABLE_AUTHORITY,
    EV_EFI_VARIABLE_BOOT,
    EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_SEPARATOR,
    Event,
    computed_event,
    parse_event_log,
    parse_variable,
    replay,
)
from tdx_boot_attest.agent.measurement.efi import (
    boot_variable_event,
    efi_action_event,
    initrd_event,
    kernel_event,
    load_options_event,
    separator_event,
    variable_event,
)
from tdx_boot_attest.agent.measurement.memory import GIB
from tdx_boot_attest.agent.measurement.td_hob import EDK2_OVMF_LAYOUT, td_hob_digest
from tests.agent.measurement.builders import ASSETS

LOGS = {
    "qemu-direct-boot.ccel": 8 * GIB,
    "qemu-direct-boot-initrd.ccel": 2 * GIB,
    "gce-cos113.ccel": None,
}


def _rebuild(event: Event, memory: int | None) -> Event | None:
    """The event rebuilt from its input, or None when the log does not hold the input."""
    kind = event.event_type
    variable = parse_variable(event.data)
    if kind in (EV_EFI_VARIABLE_DRIVER_CONFIG, EV_EFI_VARIABLE_AUTHORITY):
        assert variable is not None
        built = variable_event(
            variable.vendor_guid, variable.name, variable.data, mr_index=event.mr_index
        )
        return computed_event(event.mr_index, kind, built.data, built.sha384)
    if kind == EV_EFI_VARIABLE_BOOT:
        assert variable is not None
        return boot_variable_event(variable.name, variable.data, mr_index=event.mr_index)
    if kind == EV_SEPARATOR:
        assert event.data == b"\x00" * 4
        return separator_event(event.mr_index)
    if kind == EV_EFI_ACTION:
        return efi_action_event(event.data, mr_index=event.mr_index)
    if kind == EV_EFI_HANDOFF_TABLES2 and event.name == "TD HOB" and memory is not None:
        return computed_event(
            event.mr_index, kind, event.data, td_hob_digest(EDK2_OVMF_LAYOUT, memory)
        )
    return None


@pytest.mark.parametrize("name", sorted(LOGS))
def test_every_reproducible_event_is_reproduced(name: str) -> None:
    log = parse_event_log((ASSETS / name).read_bytes())
    rebuilt = 0
    computed: list[Event] = []
    for event in log.events:
        if not event.extends:
            continue
        built = _rebuild(event, LOGS[name])
        if built is None:
            computed.append(event)
            continue
        assert built.sha384 == event.sha384, f"event {event.index} ({event.name})"
        assert built.data == event.data, f"event {event.index} ({event.name})"
        computed.append(built)
        rebuilt += 1
    assert replay(computed) == log.replay()
    # Direct boots: TD HOB, 5 variables, 2 separators, BootOrder, Boot0000, 3 actions.
    # GCE: 5 variables, 2 authorities, 3 boot variables, 2 separators, 3 actions.
    assert rebuilt == (13 if LOGS[name] else 15)


def test_direct_boot_logs_leave_only_unheld_inputs_to_the_log() -> None:
    for name, memory in LOGS.items():
        if memory is None:
            continue
        log = parse_event_log((ASSETS / name).read_bytes())
        left = sorted(
            {
                e.name.split(" Fv(")[0]
                for e in log.events
                if e.extends and _rebuild(e, memory) is None
            }
        )
        assert left == sorted(
            {
                '"ACPI DATA"',
                "configuration firmware volume",
                "boot application kernel",
                '"LOADED_IMAGE::LoadOptions"',
            }
            | ({'"Linux initrd"'} if "initrd" in name else set())
        ), name


def test_the_calculators_event_data_is_what_the_firmware_and_stub_write() -> None:
    events = parse_event_log((ASSETS / "qemu-direct-boot-initrd.ccel").read_bytes()).events
    kernel = next(e for e in events if e.name == "boot application kernel")
    built = kernel_event(bytes(48))
    # The load address and length (the first 16 bytes) are known only at boot.
    assert built.data[16:] == kernel.data[16:]
    assert built.name == kernel.name
    options, initrd = (e for e in events if e.rtmr == 2)
    assert load_options_event(b"").data == options.data
    assert initrd_event(bytes(48)).data == initrd.data
