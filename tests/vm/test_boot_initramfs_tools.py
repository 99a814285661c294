"""A real Debian kernel boots a real mkinitramfs image with our hook in QEMU.

The simulator's FUSE configfs-tsm stands in for the TDX module inside the guest; the
real verifier runs on the host (SQLite) with the simulator's trust root. Boot 1 has the
golden measurements and must unlock the LUKS2 root with dm-crypt, mount it and show the
marker; boot 2 has another RTMR1 and must stay locked, show the server's
``measurement_mismatch`` and power off (the configured failure action).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vm import images
from tests.vm.conftest import VmWorld

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(1500)]

BASE_CMDLINE = "console=ttyS0 root=/dev/mapper/root ro ip=dhcp panic=-1 printk.time=1"


@pytest.fixture(scope="module")
def test_initramfs(vm_world: VmWorld) -> Path:
    """Our hook + script, plus the test-only simulator hook and marker script."""
    work = vm_world.root / "initramfs-tools"
    work.mkdir()
    confdir = images.initramfs_tools_confdir(work / "conf", product=True, simulator=True)
    image = work / "initrd-test.img"
    images.mkinitramfs(confdir, image, vm_world.kernel, vm_world.build_env())
    return image


def test_golden_measurements_unlock_the_root_disk(vm_world: VmWorld, test_initramfs: Path) -> None:
    result = vm_world.boot(test_initramfs, BASE_CMDLINE, "default", "it-golden")

    assert not result.timed_out, result.describe()
    assert f"tdx-vm-test: marker={vm_world.marker}" in result.console, result.describe()
    assert "/dev/mapper/root /root ext4" in result.console, result.describe()
    assert "tdx-boot-attest: OK unlocked" in result.console, result.describe()
    assert "FAILED" not in result.console, result.describe()
    assert result.returncode == 0, result.describe()

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


def test_other_measurements_stay_locked_and_power_off(
    vm_world: VmWorld, test_initramfs: Path
) -> None:
    result = vm_world.boot(test_initramfs, BASE_CMDLINE, "other", "it-other")

    assert not result.timed_out, result.describe()
    failed = result.kernel_time("tdx-boot-attest: FAILED reason=measurement_mismatch")
    assert failed is not None, result.describe()
    assert "rtmr1" in result.console.lower(), result.describe()
    assert "tdx-vm-test: marker=" not in result.console, result.describe()
    assert "/dev/mapper/root" not in result.console.split("FAILED", 1)[1], result.describe()
    # on_failure = poweroff: the kernel powers the machine down and QEMU exits by itself.
    powered_off = result.kernel_time("reboot: Power down")
    assert powered_off is not None and powered_off >= failed, result.describe()
    assert result.returncode == 0, result.describe()
    assert "measurement_mismatch" in vm_world.server.logs()


def test_crypttab_keyscript_mode_unlocks_the_root_disk(vm_world: VmWorld) -> None:
    """cryptroot opens the volume itself; our keyscript attests and hands it the key."""
    work = vm_world.root / "initramfs-tools-keyscript"
    work.mkdir()
    confdir = images.initramfs_tools_confdir(
        work / "conf", product=True, simulator=True, keyscript=True
    )
    image = work / "initrd-keyscript.img"
    env = {**vm_world.build_env(), "TDX_VM_TEST_CRYPTTAB_UUID": vm_world.volume_uuid}
    images.mkinitramfs(confdir, image, vm_world.kernel, env)
    assert "cryptroot/crypttab" in images.list_initramfs(image)

    result = vm_world.boot(image, BASE_CMDLINE, "default", "it-keyscript")

    assert not result.timed_out, result.describe()
    assert f"tdx-vm-test: marker={vm_world.marker}" in result.console, result.describe()
    assert "tdx-boot-attest: OK key released" in result.console, result.describe()
    # The boot script left the unlock to cryptroot: the agent ran as the keyscript only.
    assert "tdx-boot-attest: agent starting" not in result.console, result.describe()
    assert "tdx-boot-attest: OK unlocked" not in result.console, result.describe()
    assert "root: set up successfully" in result.console, result.describe()
    assert "FAILED" not in result.console, result.describe()
