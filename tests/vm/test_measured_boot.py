"""The calculator against real firmware: OVMF + a software TPM, QEMU direct boot.

Debian's OVMF measures the directly booted kernel into PCR4 (an
EV_EFI_BOOT_SERVICES_APPLICATION event whose digest is the Authenticode hash of the
kernel as QEMU hands it over, setup header patched, since Debian's QEMU patches it)
and the Debian kernel's EFI stub measures the LoadOptions and the initrd into PCR9.
Under TDX the same firmware code measures the same digests into RTMR1 and RTMR2.

Each boot compares, digest for digest, the calculator's kernel, command-line and initrd
events (from ``compute_manifest`` with a platform profile of a real TDX direct boot)
with the guest's TPM event log, and the replay of the calculator's events for PCR4 and
PCR9 with the PCR values the guest read from the TPM. PCR4's two firmware events
("Calling EFI Application from Boot Option" and the separator) are built with the
calculator's own EFI builders, so no digest is taken from the log; only the order of
PCR4's events is (OVMF logs the kernel before them in a direct boot). Two memory sizes
(1 GiB, 2.5 GiB) exercise both initrd placements: at 2.5 GiB only QEMU's
"above 4G flag" rule gives the measured kernel. The second boot has a non-ASCII command
line, which OVMF widens byte by byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tdx_boot_attest.agent.eventlog import (
    EV_EFI_ACTION,
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EVENT_TAG,
    EV_NO_ACTION,
    EV_SEPARATOR,
    Event,
    parse_event_log,
)
from tdx_boot_attest.agent.measurement.efi import (
    ACTION_CALLING_EFI_APPLICATION,
    efi_action_event,
    separator_event,
)
from tdx_boot_attest.agent.measurement.linux_boot import INITRD_MAX_HEADER, qemu_patched_kernel
from tdx_boot_attest.agent.measurement.manifest import Manifest, compute_manifest
from tdx_boot_attest.agent.measurement.memory import MIB, q35_below_4g
from tdx_boot_attest.agent.measurement.pe import authenticode_digest
from tdx_boot_attest.agent.measurement.platform import PlatformProfile, QemuLoader, capture_platform
from tests.agent.measurement.builders import ASSETS
from tests.vm import images
from tests.vm.measured_boot import (
    MeasuredBoot,
    dump_initrd,
    measured_boot,
    missing_requirements,
)

pytestmark = [pytest.mark.vm, pytest.mark.slow]
BOOT_TIMEOUT = 300.0
TPM_PCR_KERNEL = 4
TPM_PCR_STUB = 9


@dataclass(frozen=True)
class Inputs:
    kernel: Path
    initrd: Path
    platform: PlatformProfile
    workdir: Path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inputs]:
    missing = missing_requirements()
    if missing:
        pytest.skip(f"measured-boot test needs {', '.join(missing)}: run install-system-deps.sh vm")
    kernel = images.find_kernel()
    workdir = tmp_path_factory.mktemp("measured")
    initrd = workdir / "initrd.cpio"
    initrd.write_bytes(dump_initrd())
    log = (ASSETS / "qemu-direct-boot-initrd.ccel").read_bytes()
    platform = capture_platform(
        "real-tdx-direct-boot-2g",
        mrtd=bytes(48),
        rtmrs=parse_event_log(log).replay(),
        event_log=log,
        qemu=QemuLoader(kernel_header="patched"),
    )
    yield Inputs(kernel.vmlinuz, initrd, platform, workdir)


def test_the_initrd_is_built_reproducibly(inputs: Inputs) -> None:
    assert dump_initrd() == inputs.initrd.read_bytes()
    assert dump_initrd({"etc/marker": b"other"}) != inputs.initrd.read_bytes()


def pcr_events(boot: MeasuredBoot, pcr: int) -> list[Event]:
    events = parse_event_log(boot.event_log).events
    return [e for e in events if e.mr_index == pcr and e.event_type != EV_NO_ACTION]


def pcr_replay(digests: list[bytes]) -> bytes:
    value = bytes(48)
    for digest in digests:
        value = hashlib.sha384(value + digest).digest()
    return value


@pytest.mark.parametrize(
    ("memory_mb", "cmdline"),
    [
        (1024, "console=ttyS0 quiet panic=-1 tdx.test=ascii"),
        (2560, "console=ttyS0 quiet panic=-1 tdx.note=café-ü"),
    ],
)
def test_calculator_digests_equal_what_firmware_and_stub_measured(
    inputs: Inputs, memory_mb: int, cmdline: str
) -> None:
    kernel = inputs.kernel.read_bytes()
    initrd = inputs.initrd.read_bytes()
    memory = memory_mb * MIB
    manifest: Manifest = compute_manifest(
        kernel, initrd, cmdline, memory, inputs.platform,
        kernel_name=inputs.kernel.name, initrd_name="initrd.cpio",
    )  # fmt: skip
    boot = measured_boot(
        workdir=inputs.workdir / f"boot-{memory_mb}",
        kernel=inputs.kernel,
        initrd=inputs.initrd,
        append=cmdline,
        memory_mb=memory_mb,
        timeout=BOOT_TIMEOUT,
    )

    pcr4 = pcr_events(boot, TPM_PCR_KERNEL)
    assert [e.event_type for e in pcr4] == [
        EV_EFI_BOOT_SERVICES_APPLICATION, EV_EFI_ACTION, EV_SEPARATOR
    ], [e.name for e in pcr4]  # fmt: skip
    (kernel_event,) = manifest.events_for(1)[:1]
    assert kernel_event.sha384 == pcr4[0].sha384, "kernel (PCR4 boot application)"
    assert authenticode_digest(kernel) != pcr4[0].sha384, "the header patch must matter"
    if memory > 2048 * MIB:
        older_rule = qemu_patched_kernel(
            kernel, cmdline.encode(), len(initrd), below_4g_bytes=q35_below_4g(memory),
            acpi_data_size=0x28000, rule=INITRD_MAX_HEADER,
        )  # fmt: skip
        assert authenticode_digest(older_rule) != pcr4[0].sha384

    pcr9 = pcr_events(boot, TPM_PCR_STUB)
    assert [e.event_type for e in pcr9] == [EV_EVENT_TAG, EV_EVENT_TAG]
    stub = manifest.events_for(2)
    assert [e.name for e in stub] == [e.name for e in pcr9]
    assert stub[0].sha384 == pcr9[0].sha384, "command line (PCR9 LoadOptions)"
    assert stub[1].sha384 == pcr9[1].sha384, "initrd (PCR9 Linux initrd)"
    assert manifest.initrd is not None and manifest.initrd.sha384 == pcr9[1].sha384

    calculated_pcr4 = [
        kernel_event.sha384 or b"",
        efi_action_event(ACTION_CALLING_EFI_APPLICATION).sha384 or b"",
        separator_event(TPM_PCR_KERNEL).sha384 or b"",
    ]
    assert pcr4[1].data == ACTION_CALLING_EFI_APPLICATION
    assert pcr_replay(calculated_pcr4) == boot.pcrs[TPM_PCR_KERNEL]
    assert pcr_replay([e.sha384 or b"" for e in stub]) == boot.pcrs[TPM_PCR_STUB]
