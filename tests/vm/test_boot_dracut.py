"""The golden and the drifted boot with a dracut-built, systemd-based initrd and our module.

dracut-core and dracut-network install beside initramfs-tools on Debian, so the real
dracut builds the image (from a private copy of its module tree, so the host's own
initramfs tooling is untouched). In the initrd, systemd-networkd brings the network
up, tdx-boot-attest.service runs the agent before cryptsetup-pre.target, and the root
device appears once the agent has opened it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm import images
from tests.vm.conftest import VmWorld, console_refusal

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(1800)]

# The root device appears only once the agent has opened it, which under software
# emulation can take longer than dracut's default 180 s wait (rd.retry). A failure that
# reaches dracut's emergency handling powers off instead of waiting for a shell.
BASE_CMDLINE = (
    "console=ttyS0 root=/dev/mapper/root ro ip=dhcp panic=-1 printk.time=1 "
    "rd.shell=0 rd.emergency=poweroff systemd.show_status=error "
    "rd.retry=400 systemd.journald.forward_to_console=1"
)


IMAGE = "dracut-golden"


@pytest.fixture(scope="module")
def dracut_image(vm_world: VmWorld) -> Iterator[Path]:
    """The image, approved from its manifest for BASE_CMDLINE (retired afterwards)."""
    work = vm_world.root / "dracut"
    work.mkdir()
    basedir = images.dracut_basedir(work / "base", vm_world.venv.parents[1], simulator=True)
    image = work / "initrd-dracut-test.img"
    images.dracut(basedir, image, vm_world.kernel, vm_world.build_env(), simulator=True)
    vm_world.approve(IMAGE, image, BASE_CMDLINE)
    yield image
    vm_world.retire(IMAGE)


def test_module_puts_agent_unit_and_network_into_the_image(dracut_image: Path) -> None:
    paths = images.list_dracut_image(dracut_image)
    for expected in (
        "opt/tdx-boot-attest/bin/tdx-boot-agent",
        "opt/tdx-boot-attest/bin/python",
        "etc/tdx-boot-attest/agent.conf",
        "usr/lib/systemd/system/tdx-boot-attest.service",
        "etc/systemd/system/initrd.target.wants/tdx-boot-attest.service",
        "usr/lib/dracut/hooks/cmdline/10-tdx-boot-attest-cmdline.sh",
        "usr/lib/systemd/systemd-networkd",
    ):
        assert any(p == expected or p.endswith("/" + expected) for p in paths), expected
    assert not any(p.startswith("tmp/") for p in paths), "staging paths leaked into the image"
    # Libraries of Python extension modules (ctypes needs libffi) must come along.
    assert any("libffi.so" in p for p in paths), "libffi (for _ctypes) is missing"


def test_product_image_size_with_and_without_the_module(vm_world: VmWorld) -> None:
    """The product module alone (no test glue), against the same build without it."""
    work = vm_world.root / "dracut-sizes"
    work.mkdir()
    stage = vm_world.venv.parents[1]
    env = vm_world.build_env()
    baseline = work / "initrd-baseline.img"
    product = work / "initrd-product.img"
    basedir = images.dracut_basedir(work / "base", stage, simulator=False)
    images.dracut(basedir, baseline, vm_world.kernel, env, simulator=False, agent=False)
    images.dracut(basedir, product, vm_world.kernel, env, simulator=False)

    paths = images.list_dracut_image(product)
    assert any(p.endswith("opt/tdx-boot-attest/bin/tdx-boot-agent") for p in paths)
    assert not any("tdxsim" in p for p in paths), "test glue leaked into the product image"
    assert not any(p.endswith("tdx-boot-agent") for p in images.list_dracut_image(baseline))
    vm_world.figures["dracut_size"] = {
        "compression": "zstd",
        "baseline_bytes": baseline.stat().st_size,
        "with_agent_bytes": product.stat().st_size,
        "added_bytes": product.stat().st_size - baseline.stat().st_size,
    }


def test_golden_measurements_unlock_the_root_disk(vm_world: VmWorld, dracut_image: Path) -> None:
    result = vm_world.boot(dracut_image, BASE_CMDLINE, "dracut-golden")

    assert not result.timed_out, result.describe()
    assert f"tdx-vm-test: marker={vm_world.marker}" in result.console, result.describe()
    assert "/dev/mapper/root /sysroot ext4" in result.console, result.describe()
    assert "FAILED reason=" not in result.console, result.describe()
    assert "measured boot from fw_cfg" in result.console, result.describe()
    attempt = vm_world.last_attempt()
    assert (attempt.image, attempt.verdict) == (IMAGE, "accepted")
    assert attempt.event_log_bytes, "the agent must have sent the firmware event log"
    # The per-boot identity key: mode 0600, on /run's tmpfs (switch_root carries it over).
    assert "tdx-vm-test: identity=600 run=tmpfs" in result.console, result.describe()
    unlocked = result.kernel_time("tdx-boot-attest: OK unlocked")
    marker = result.kernel_time("tdx-vm-test: marker=")
    assert unlocked is not None and marker is not None, result.describe()
    vm_world.figures["dracut_boot"] = {
        "accel": result.accel,
        "kernel_start_to_init_s": result.kernel_time("Run /init as init process"),
        "kernel_start_to_simulator_ready_s": result.kernel_time("configfs-tsm ready"),
        "kernel_start_to_agent_start_s": result.kernel_time("Starting tdx-boot-attest.service"),
        "kernel_start_to_unlocked_s": unlocked,
        "kernel_start_to_root_mounted_s": marker,
        "qemu_wall_s": round(result.seconds, 1),
        "initrd_bytes": dracut_image.stat().st_size,
    }


def test_a_drifted_command_line_stays_locked_names_it_and_powers_off(
    vm_world: VmWorld, dracut_image: Path
) -> None:
    result = vm_world.boot(dracut_image, BASE_CMDLINE + " init=/bin/sh", "dracut-drifted")

    assert not result.timed_out, result.describe()
    failed = result.kernel_time("tdx-boot-attest: FAILED reason=measurement_mismatch")
    assert failed is not None, result.describe()
    assert "tdx-vm-test: marker=" not in result.console, result.describe()
    assert (
        f'rtmr2 differs from image {IMAGE}: "LOADED_IMAGE::LoadOptions" (kernel command line)'
        in console_refusal(result)
    ), result.describe()
    powered_off = result.kernel_time("reboot: Power down")
    assert powered_off is not None and powered_off >= failed, result.describe()
