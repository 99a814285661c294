"""A real Debian kernel boots a real mkinitramfs image with our hook in QEMU.

The simulator's FUSE configfs-tsm stands in for the TDX module inside the guest, with the
measurements of what QEMU really loaded (see conftest); the real verifier runs on the
host (SQLite) with the simulator's trust root, and the image is approved from its
measurement manifest only. The golden boot must unlock the LUKS2 root with dm-crypt,
mount it and show the marker, the agent having sent the firmware event log. A boot
whose command line drifted, and the same VM with a rebuilt initrd, must stay locked,
show the server's ``measurement_mismatch`` naming the component that changed, and power
off (the configured failure action).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm import images
from tests.vm.conftest import VmWorld, console_refusal
from tests.vm.qemu import BootResult

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(1800)]

BASE_CMDLINE = "console=ttyS0 root=/dev/mapper/root ro ip=dhcp panic=-1 printk.time=1"
IMAGE = "it-golden"
IDENTITY_IN_MEMORY = "tdx-vm-test: identity=600 run=tmpfs"


def build(vm_world: VmWorld, name: str, **env: str) -> Path:
    """Our hook + script, plus the test-only simulator hook and marker script."""
    work = vm_world.root / name
    work.mkdir()
    confdir = images.initramfs_tools_confdir(work / "conf", product=True, simulator=True)
    image = work / f"initrd-{name}.img"
    images.mkinitramfs(confdir, image, vm_world.kernel, vm_world.build_env(env))
    return image


@pytest.fixture(scope="module")
def test_initramfs(vm_world: VmWorld) -> Iterator[Path]:
    """The image, approved from its manifest for BASE_CMDLINE (retired afterwards)."""
    image = build(vm_world, "initramfs-tools")
    vm_world.approve(IMAGE, image, BASE_CMDLINE)
    yield image
    vm_world.retire(IMAGE)


def assert_refused_and_powered_off(vm_world: VmWorld, result: BootResult) -> str:
    """The boot stayed locked and powered off; returns the console's refusal line."""
    assert not result.timed_out, result.describe()
    failed = result.kernel_time("tdx-boot-attest: FAILED reason=measurement_mismatch")
    assert failed is not None, result.describe()
    assert "tdx-vm-test: marker=" not in result.console, result.describe()
    assert "/dev/mapper/root" not in result.console.split("FAILED", 1)[1], result.describe()
    # on_failure = poweroff: the kernel powers the machine down and QEMU exits by itself.
    powered_off = result.kernel_time("reboot: Power down")
    assert powered_off is not None and powered_off >= failed, result.describe()
    assert result.returncode == 0, result.describe()
    attempt = vm_world.last_attempt()
    assert (attempt.verdict, attempt.reason) == ("refused", "measurement_mismatch")
    assert attempt.event_log_bytes, "the agent must have sent the firmware event log"
    return console_refusal(result)


def test_golden_measurements_unlock_the_root_disk(vm_world: VmWorld, test_initramfs: Path) -> None:
    result = vm_world.boot(test_initramfs, BASE_CMDLINE, "it-golden")

    assert not result.timed_out, result.describe()
    assert f"tdx-vm-test: marker={vm_world.marker}" in result.console, result.describe()
    assert "/dev/mapper/root /root ext4" in result.console, result.describe()
    assert "tdx-boot-attest: OK unlocked" in result.console, result.describe()
    assert "FAILED" not in result.console, result.describe()
    assert "measured boot from fw_cfg" in result.console, result.describe()
    assert "attesting without it" not in result.console, result.describe()
    assert result.returncode == 0, result.describe()
    attempt = vm_world.last_attempt()
    assert (attempt.image, attempt.verdict) == (IMAGE, "accepted")
    assert attempt.event_log_bytes, "the agent must have sent the firmware event log"
    # The per-boot identity key: mode 0600, on /run's tmpfs (init moves /run to the root).
    assert IDENTITY_IN_MEMORY in result.console, result.describe()

    started = result.kernel_time("tdx-boot-attest: agent starting")
    released = result.kernel_time("tdx-boot-attest: OK key released")
    unlocked = result.kernel_time("tdx-boot-attest: OK unlocked")
    marker = result.kernel_time("tdx-vm-test: marker=")
    assert started is not None and unlocked is not None and marker is not None
    vm_world.figures["initramfs_tools_boot"] = {
        "accel": result.accel,
        "kernel_start_to_init_s": result.kernel_time("Run /init as init process"),
        "kernel_start_to_simulator_ready_s": result.kernel_time("configfs-tsm ready"),
        "kernel_start_to_agent_start_s": started,
        "kernel_start_to_key_released_s": released,
        "kernel_start_to_unlocked_s": unlocked,
        "agent_s": round(unlocked - started, 3),
        "kernel_start_to_root_mounted_s": marker,
        "qemu_wall_s": round(result.seconds, 1),
    }


def test_a_drifted_command_line_stays_locked_names_it_and_powers_off(
    vm_world: VmWorld, test_initramfs: Path
) -> None:
    result = vm_world.boot(test_initramfs, BASE_CMDLINE + " init=/bin/sh", "it-drifted")

    refusal = assert_refused_and_powered_off(vm_world, result)
    assert (
        f'rtmr2 differs from image {IMAGE}: "LOADED_IMAGE::LoadOptions" (kernel command line)'
        in refusal
    ), result.describe()
    assert "everything else equal" in refusal, result.describe()
    assert "measurement_mismatch" in vm_world.server.logs()


def test_the_same_vm_with_a_rebuilt_initrd_is_refused_naming_it(
    vm_world: VmWorld, test_initramfs: Path
) -> None:
    rebuilt = build(vm_world, "initramfs-tools-rebuilt", TDX_VM_TEST_BUILD="rebuilt")
    digests = {hashlib.sha384(p.read_bytes()).digest() for p in (test_initramfs, rebuilt)}
    assert len(digests) == 2, "the rebuild must change the initrd"

    result = vm_world.boot(rebuilt, BASE_CMDLINE, "it-rebuilt")

    refusal = assert_refused_and_powered_off(vm_world, result)
    assert f"from image {IMAGE}:" in refusal, result.describe()
    assert '"Linux initrd" (initrd)' in refusal, result.describe()
    assert "LOADED_IMAGE::LoadOptions" not in refusal, result.describe()


def test_crypttab_keyscript_mode_unlocks_the_root_disk(vm_world: VmWorld) -> None:
    """cryptroot opens the volume itself; our keyscript attests and hands it the key."""
    work = vm_world.root / "initramfs-tools-keyscript"
    work.mkdir()
    confdir = images.initramfs_tools_confdir(
        work / "conf", product=True, simulator=True, keyscript=True
    )
    image = work / "initrd-keyscript.img"
    env = vm_world.build_env({"TDX_VM_TEST_CRYPTTAB_UUID": vm_world.volume_uuid})
    images.mkinitramfs(confdir, image, vm_world.kernel, env)
    assert "cryptroot/crypttab" in images.list_initramfs(image)

    vm_world.approve("it-keyscript", image, BASE_CMDLINE)
    try:
        result = vm_world.boot(image, BASE_CMDLINE, "it-keyscript")
    finally:
        vm_world.retire("it-keyscript")

    assert not result.timed_out, result.describe()
    assert f"tdx-vm-test: marker={vm_world.marker}" in result.console, result.describe()
    assert "tdx-boot-attest: OK key released" in result.console, result.describe()
    # The boot script left the unlock to cryptroot: the agent ran as the keyscript only.
    assert "tdx-boot-attest: agent starting" not in result.console, result.describe()
    assert "tdx-boot-attest: OK unlocked" not in result.console, result.describe()
    assert "root: set up successfully" in result.console, result.describe()
    assert "FAILED" not in result.console, result.describe()
    attempt = vm_world.last_attempt()
    assert (attempt.image, attempt.verdict) == ("it-keyscript", "accepted")
    assert attempt.event_log_bytes, "the keyscript must have sent the firmware event log"
    assert IDENTITY_IN_MEMORY in result.console, result.describe()
