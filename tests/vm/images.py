"""Build what the QEMU boot test boots: staged agent install, LUKS2 disk, initramfs images.

Nothing here touches the host's own boot configuration: the agent is installed with
``make install DESTDIR=...`` (as an image builder would, into a staging tree), and
``mkinitramfs -d CONFDIR`` / ``dracut --conf`` run on private copies of the config.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
HOOKS_DIR: Final = REPO_ROOT / "initramfs-hooks"
TEST_GLUE_DIR: Final = Path(__file__).resolve().parent / "initramfs"
IMAGE_PYTHON: Final = Path("/usr/bin/python3")
AGENT_PREFIX: Final = "/opt/tdx-boot-attest"
MARKER_NAME: Final = "tdx-vm-test-marker"
REQUIRED_TOOLS: Final = (
    "qemu-system-x86_64", "mkinitramfs", "lsinitramfs", "cryptsetup", "mke2fs", "dracut",
    "lsinitrd",
)  # fmt: skip


class VmSetupError(Exception):
    """A build step of the VM test failed; the message carries the tool's output."""


@dataclass(frozen=True)
class Kernel:
    """An installed kernel: version string and its vmlinuz."""

    version: str
    vmlinuz: Path


def missing_tools() -> list[str]:
    """Executables the VM test needs that are not installed. Raises nothing."""
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if not IMAGE_PYTHON.is_file():
        missing.append(str(IMAGE_PYTHON))
    return missing


def _version_key(version: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", version)]


def find_kernel() -> Kernel:
    """The newest installed Debian cloud kernel with its modules; raises VmSetupError."""
    candidates = []
    for vmlinuz in Path("/boot").glob("vmlinuz-*-cloud-amd64"):
        version = vmlinuz.name.removeprefix("vmlinuz-")
        if (Path("/lib/modules") / version / "modules.dep").is_file():
            candidates.append(Kernel(version, vmlinuz))
    if not candidates:
        raise VmSetupError(
            "no linux-image-*-cloud-amd64 kernel with modules is installed "
            "(run scripts/install-system-deps.sh vm)"
        )
    return max(candidates, key=lambda k: _version_key(k.version))


def run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 600,
        input_bytes: bytes | None = None, cwd: Path | None = None) -> str:  # fmt: skip
    """Run a build step; return its output or raise VmSetupError with the output tail."""
    result = subprocess.run(
        argv,
        env=env,
        input=input_bytes,
        capture_output=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )
    output = (result.stdout + result.stderr).decode("utf-8", errors="replace")
    if result.returncode != 0:
        tail = "\n".join(output.splitlines()[-40:])
        raise VmSetupError(f"{' '.join(argv[:3])} ... failed ({result.returncode}):\n{tail}")
    return output


def stage_install(destdir: Path) -> Path:
    """``make install DESTDIR=destdir`` from the repository; returns the staged venv."""
    run(
        ["make", "-C", str(REPO_ROOT), "install", f"DESTDIR={destdir}",
         f"IMAGE_PYTHON={IMAGE_PYTHON}"],
        timeout=900,
    )  # fmt: skip
    return destdir / AGENT_PREFIX.lstrip("/")


def make_luks_disk(path: Path, *, passphrase: bytes, marker: str, uuid: str) -> None:
    """A LUKS2 disk image whose ext4 file system holds the marker file.

    The host may lack device-mapper, so the file system is built from a directory
    (mke2fs -d) and then encrypted in place offline (cryptsetup reencrypt --encrypt),
    which needs no dm-crypt. Fast PBKDF settings keep the guest's unlock quick.
    """
    content = path.parent / f"{path.name}.rootfs"
    content.mkdir()
    (content / MARKER_NAME).write_text(marker + "\n")
    with path.open("wb") as handle:
        handle.truncate(64 * 1024 * 1024)
    run(["mke2fs", "-q", "-t", "ext4", "-L", "tdx-vm-root", "-d", str(content), str(path), "48M"])
    run(
        ["cryptsetup", "reencrypt", "--encrypt", "--type", "luks2", "--batch-mode",
         "--reduce-device-size", "16M", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
         "--uuid", uuid, "--key-file=-", str(path)],
        input_bytes=passphrase,
        cwd=path.parent,  # reencrypt keeps a temporary header file in its working directory
    )  # fmt: skip
    shutil.rmtree(content)


def write_agent_config(path: Path, *, url: str, uuid: str, on_failure: str = "poweroff") -> Path:
    """agent.conf for the guest: plain http to the host, the simulator's tsm and event
    log, one volume."""
    path.write_text(
        "[server]\n"
        f"url = {url}\n"
        "allow_http = true\n"
        "[tsm]\n"
        "root = /run/tdxsim/report\n"
        "[eventlog]\n"
        "path = /run/tdxsim/.tdxsim-ccel\n"
        "[boot]\n"
        "deadline = 120\n"
        f"on_failure = {on_failure}\n"
        "device_timeout = 60\n"
        "[volume root]\n"
        f"device = UUID={uuid}\n"
    )
    return path


def stage_simulator(lib: Path) -> Path:
    """Copy tdxsim and mfusepy (pure Python) into ``lib`` for the test initramfs."""
    import mfusepy

    # The simulator installs as tdx_boot_attest.tdxsim; the namespace package is shared
    # with the agent's venv in the guest.
    package = lib / "tdx_boot_attest" / "tdxsim"
    package.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO_ROOT / "tdxsim", package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(str(mfusepy.__file__), lib / "mfusepy.py")
    # Bytecode for the guest's interpreter: compiling at import is slow under emulation.
    run([str(IMAGE_PYTHON), "-m", "compileall", "-q", str(package)])
    return lib


def initramfs_tools_confdir(
    dest: Path, *, product: bool, simulator: bool, keyscript: bool = False
) -> Path:
    """A private copy of /etc/initramfs-tools with our hook/script and the test glue.

    ``keyscript`` adds a crypttab entry using our keyscript (the build needs
    TDX_VM_TEST_CRYPTTAB_UUID in its environment).
    """
    shutil.copytree("/etc/initramfs-tools", dest, symlinks=True)
    for sub in ("hooks", "scripts/local-top", "scripts/init-premount", "scripts/init-bottom"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    if product:
        tools = HOOKS_DIR / "initramfs-tools"
        _install_exec(tools / "hooks/tdx-boot-attest", dest / "hooks/tdx-boot-attest")
        _install_exec(
            tools / "scripts/local-top/tdx-boot-attest", dest / "scripts/local-top/tdx-boot-attest"
        )
    if simulator:
        _install_exec(TEST_GLUE_DIR / "tdxsim-hook.sh", dest / "hooks/tdxsim-test")
        _install_exec(
            TEST_GLUE_DIR / "tdxsim-premount.sh", dest / "scripts/init-premount/tdxsim-test"
        )
        _install_exec(
            TEST_GLUE_DIR / "marker-bottom.sh", dest / "scripts/init-bottom/tdx-vm-test-marker"
        )
    if keyscript:
        _install_exec(
            TEST_GLUE_DIR / "keyscript-crypttab-hook.sh", dest / "hooks/tdx-vm-test-crypttab"
        )
    return dest


def _install_exec(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    target.chmod(0o755)


def build_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment for image builds: ours plus the hooks' build-time overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TDX_", "TDXSIM_"))}
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    env.update(extra)
    return env


def mkinitramfs(confdir: Path, out: Path, kernel: Kernel, env: dict[str, str]) -> str:
    """Build an initramfs with the real mkinitramfs and ``confdir``; returns its output."""
    return run(["mkinitramfs", "-d", str(confdir), "-o", str(out), kernel.version], env=env)


def list_initramfs(image: Path) -> set[str]:
    """The paths inside an initramfs-tools image (lsinitramfs), without a leading slash."""
    output = run(["lsinitramfs", str(image)])
    return {line.strip().lstrip("./") for line in output.splitlines() if line.strip()}


DRACUT_TEST_MODULE: Final = Path(__file__).resolve().parent / "dracut" / "99tdxsim-test"
DRACUT_MODULES: Final = (
    "systemd systemd-initrd dracut-systemd systemd-udevd kernel-modules "
    "kernel-network-modules qemu qemu-net rootfs-block crypt dm tdx-boot-attest"
)


def dracut_basedir(dest: Path, staged_root: Path, *, simulator: bool) -> Path:
    """A private dracut tree: the system's, plus our staged module (and the test module).

    dracut reads its modules from ``$dracutbasedir/modules.d``, so a symlink copy of
    /usr/lib/dracut with ours added leaves the host's dracut untouched.
    """
    shutil.copytree("/usr/lib/dracut", dest, symlinks=True, copy_function=os.symlink)
    ours = staged_root / "usr/lib/dracut/modules.d/90tdx-boot-attest"
    if not (ours / "module-setup.sh").is_file():
        raise VmSetupError(f"make install did not put the dracut module at {ours}")
    shutil.copytree(ours, dest / "modules.d" / ours.name)
    if simulator:
        shutil.copytree(DRACUT_TEST_MODULE, dest / "modules.d" / DRACUT_TEST_MODULE.name)
    return dest


def dracut(basedir: Path, out: Path, kernel: Kernel, env: dict[str, str], *,
           simulator: bool, agent: bool = True) -> str:  # fmt: skip
    """Build a systemd-based initrd with the real dracut from ``basedir``; returns its log."""
    confdir = basedir.parent / f"{basedir.name}.conf.d"
    confdir.mkdir(exist_ok=True)
    modules = DRACUT_MODULES if agent else DRACUT_MODULES.replace(" tdx-boot-attest", " network")
    modules += " tdxsim-test" if simulator else ""
    env = {**env, "dracutbasedir": str(basedir)}
    return run(
        ["dracut", "--force", "--no-hostonly", "--no-hostonly-cmdline", "--no-early-microcode",
         "--compress", "zstd",
         "--conf", "/dev/null", "--confdir", str(confdir), "--modules", modules,
         "--kver", kernel.version, str(out)],
        env=env,
    )  # fmt: skip


def list_dracut_image(image: Path) -> set[str]:
    """The paths inside a dracut image (lsinitrd), without a leading slash."""
    output = run(["lsinitrd", str(image)])
    paths = set()
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 9 and parts[0][:1] in "-dlcb":
            paths.add(parts[8].lstrip("./"))
    return paths
