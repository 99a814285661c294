"""What our initramfs-tools hook puts into a real mkinitramfs image, and what it refuses.

Builds the product image (our hook and boot script, no test glue) next to a baseline
(same configuration, no hook) and records both compressed sizes.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.vm import images
from tests.vm.conftest import VmWorld

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(900)]

HOOK = images.HOOKS_DIR / "initramfs-tools" / "hooks" / "tdx-boot-attest"


def test_product_image_carries_the_agent_and_nothing_of_the_simulator(
    vm_world: VmWorld,
) -> None:
    work = vm_world.root / "image-sizes"
    work.mkdir()
    baseline_conf = images.initramfs_tools_confdir(work / "base", product=False, simulator=False)
    product_conf = images.initramfs_tools_confdir(work / "product", product=True, simulator=False)
    baseline = work / "initrd-baseline.img"
    product = work / "initrd-product.img"
    env = vm_world.build_env()
    images.mkinitramfs(baseline_conf, baseline, vm_world.kernel, env)
    images.mkinitramfs(product_conf, product, vm_world.kernel, env)

    paths = images.list_initramfs(product)
    for expected in (
        "opt/tdx-boot-attest/bin/tdx-boot-agent",
        "opt/tdx-boot-attest/bin/python",
        "opt/tdx-boot-attest/pyvenv.cfg",
        "opt/tdx-boot-attest/lib/python3.11/site-packages/tdx_boot_attest/agent/cli.py",
        "opt/tdx-boot-attest/lib/python3.11/site-packages/tdx_boot_attest/agent/identity.py",
        "opt/tdx-boot-attest/lib/python3.11/site-packages/cryptography/hazmat/primitives/"
        "asymmetric/ed25519.py",
        "opt/tdx-boot-attest/lib/python3.11/site-packages/cryptography/__init__.py",
        "opt/tdx-boot-attest/libexec/keyscript",
        "etc/tdx-boot-attest/agent.conf",
        "usr/bin/python3.11",
        "usr/lib/python3.11/os.py",
        "usr/lib/python3.11/encodings/utf_8.py",
        # requests is imported lazily, so only the static walk through the namespace
        # package finds what it needs from the stdlib.
        "usr/lib/python3.11/http/cookies.py",
        "usr/sbin/cryptsetup",
        "scripts/local-top/tdx-boot-attest",
    ):
        assert expected in paths, f"{expected} missing from the product initramfs"
    assert any(p.endswith("/dm-crypt.ko") for p in paths)
    assert any("libudev.so.1" in p for p in paths)
    assert any("libffi.so" in p for p in paths), "libffi (for _ctypes) is missing"
    assert not any("tdxsim" in p for p in paths), "test glue leaked into the product image"
    assert not any(p.startswith("tmp/") for p in paths), "staging paths leaked into the image"
    for tooling in ("pip", "setuptools", "tdx_boot_attest/server"):
        site = f"opt/tdx-boot-attest/lib/python3.11/site-packages/{tooling}/__init__.py"
        assert site not in paths, f"{tooling} should not be in the image"

    vm_world.figures["initramfs_tools_size"] = {
        "compression": "zstd (initramfs.conf default)",
        "baseline_bytes": baseline.stat().st_size,
        "with_agent_bytes": product.stat().st_size,
        "added_bytes": product.stat().st_size - baseline.stat().st_size,
    }


def run_hook(
    vm_world: VmWorld, tmp_path: Path, **overrides: str
) -> subprocess.CompletedProcess[str]:
    """Run our hook as mkinitramfs would, into an empty image tree."""
    destdir = tmp_path / "destdir"
    destdir.mkdir()
    env = vm_world.build_env()
    env.update(
        {"DESTDIR": str(destdir), "version": vm_world.kernel.version, "verbose": "n",
         "CONFDIR": "/etc/initramfs-tools", "MODULESDIR": f"/lib/modules/{vm_world.kernel.version}"}
    )  # fmt: skip
    env.update(overrides)
    return subprocess.run(
        ["sh", str(HOOK)], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_hook_fails_the_build_without_the_installed_agent(
    vm_world: VmWorld, tmp_path: Path
) -> None:
    result = run_hook(vm_world, tmp_path, TDX_BOOT_ATTEST_PREFIX=str(tmp_path / "nothing"))
    assert result.returncode != 0
    assert "the agent is not installed" in result.stderr


def test_hook_fails_the_build_on_an_unusable_configuration(
    vm_world: VmWorld, tmp_path: Path
) -> None:
    bad = tmp_path / "agent.conf"
    bad.write_text("[server]\nurl = http://10.0.2.2:1\n")  # http without allow_http
    result = run_hook(vm_world, tmp_path, TDX_BOOT_ATTEST_CONFIG=str(bad))
    assert result.returncode != 0
    assert "invalid configuration" in result.stderr and "allow_http" in result.stderr


def test_hook_fails_the_build_without_a_configuration(vm_world: VmWorld, tmp_path: Path) -> None:
    result = run_hook(vm_world, tmp_path, TDX_BOOT_ATTEST_CONFIG=str(tmp_path / "absent.conf"))
    assert result.returncode != 0
    assert "absent.conf is missing" in result.stderr


def test_make_uninstall_removes_what_install_put_down(vm_world: VmWorld, tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    shutil.copytree(vm_world.venv.parents[1], stage, symlinks=True)
    installed = [
        "opt/tdx-boot-attest/bin/tdx-boot-agent",
        "usr/share/initramfs-tools/hooks/tdx-boot-attest",
        "usr/share/initramfs-tools/scripts/local-top/tdx-boot-attest",
        "usr/lib/dracut/modules.d/90tdx-boot-attest/module-setup.sh",
        "usr/lib/systemd/system/tdx-boot-attest.service",
        "usr/lib/systemd/system/tdx-attest-runtime.service",
        "usr/lib/systemd/system/tdx-attest-runtime.timer",
    ]
    for path in installed:
        assert (stage / path).exists(), f"make install did not install {path}"
    images.run(["make", "-C", str(images.REPO_ROOT), "uninstall", f"DESTDIR={stage}"])
    for path in installed:
        assert not (stage / path).exists(), f"make uninstall left {path}"
    assert (stage / "etc/tdx-boot-attest/agent.conf").is_file(), "the configuration is kept"
