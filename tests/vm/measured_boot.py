"""Boot a kernel directly under OVMF with a software TPM and read back what was measured.

The guest is QEMU (q35) with Debian's OVMF and a ``tpm-crb`` device backed by swtpm
(SHA-256 and SHA-384 banks), booted with ``-kernel/-initrd/-append``. The initrd is
built here, reproducibly: a newc cpio archive with fixed metadata holding busybox, its
libraries and an ``/init`` that writes the TPM event log
(``/sys/kernel/security/tpm0/binary_bios_measurements``) and the SHA-384 PCR values to
the second serial port, then powers off.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tests.vm import qemu

OVMF_CODE: Final = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS: Final = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
BUSYBOX: Final = Path("/bin/busybox")
REQUIRED_TOOLS: Final = ("qemu-system-x86_64", "swtpm", "swtpm_setup", "ldd")
PCRS: Final = (4, 9)
INIT_SCRIPT: Final = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs securityfs /sys/kernel/security
{
  echo BEGIN-EVENTLOG
  base64 /sys/kernel/security/tpm0/binary_bios_measurements
  echo END-EVENTLOG
  for pcr in PCR_LIST; do echo "PCR-SHA384 $pcr $(cat /sys/class/tpm/tpm0/pcr-sha384/$pcr)"; done
  echo END-MEASUREMENTS
} > /dev/ttyS1 2>&1
poweroff -f
""".replace("PCR_LIST", " ".join(str(n) for n in PCRS))


class MeasuredBootError(Exception):
    """The measured boot could not be set up or the guest did not report."""


def missing_requirements() -> list[str]:
    """What the measured-boot test needs and this machine lacks. Raises nothing."""
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    missing += [str(p) for p in (OVMF_CODE, OVMF_VARS, BUSYBOX) if not p.is_file()]
    return missing


# -- a reproducible initrd ------------------------------------------------------------------

_NEWC_MAGIC: Final = b"070701"


def _cpio_entry(name: str, mode: int, data: bytes, inode: int, rdev: tuple[int, int]) -> bytes:
    encoded = name.encode() + b"\x00"
    fields = (inode, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
    header = _NEWC_MAGIC + b"".join(b"%08X" % value for value in fields)
    entry = header + encoded
    entry += bytes(-len(entry) % 4) + data
    return entry + bytes(-len(entry) % 4)


def reproducible_initrd(files: dict[str, bytes], directories: list[str]) -> bytes:
    """A newc cpio archive with fixed owners, times and inode numbers, in name order.

    ``files`` maps archive paths to contents (``init`` is made executable, as is
    anything under ``bin`` or ``lib``); ``directories`` are created first; /dev/console
    is added as a character device so the kernel can open it for /init.
    """
    entries: list[tuple[str, int, bytes, tuple[int, int]]] = []
    for directory in sorted(set(directories) | {"dev"}):
        entries.append((directory, 0o040755, b"", (0, 0)))
    entries.append(("dev/console", 0o020600, b"", (5, 1)))
    for name in sorted(files):
        entries.append((name, 0o100755, files[name], (0, 0)))
    archive = b"".join(
        _cpio_entry(name, mode, data, inode, rdev)
        for inode, (name, mode, data, rdev) in enumerate(entries, start=1)
    )
    return archive + _cpio_entry("TRAILER!!!", 0, b"", 0, (0, 0))


def _shared_libraries(binary: Path) -> list[Path]:
    output = subprocess.run(
        ["ldd", str(binary)], capture_output=True, text=True, check=False, timeout=60
    ).stdout
    return [Path(p) for p in re.findall(r"(/\S+\.so[.\d]*)", output)]


def dump_initrd(extra: dict[str, bytes] | None = None) -> bytes:
    """The test initrd: busybox, its libraries and the measurement-dumping /init.

    ``extra`` adds files (so a test can make a second, different initrd).
    """
    files = {"init": INIT_SCRIPT.encode(), "bin/busybox": BUSYBOX.read_bytes()}
    directories = ["bin", "proc", "sys"]
    for library in _shared_libraries(BUSYBOX):
        name = str(library).lstrip("/")
        files[name] = library.read_bytes()
        parts = name.split("/")[:-1]
        directories += ["/".join(parts[: n + 1]) for n in range(len(parts))]
    files.update(extra or {})
    return reproducible_initrd(files, directories)


# -- the boot -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasuredBoot:
    """What the guest reported: the TPM event log and the SHA-384 PCR values."""

    event_log: bytes
    pcrs: dict[int, bytes]
    result: qemu.BootResult


def _start_swtpm(state: Path, control: Path) -> subprocess.Popen[bytes]:
    state.mkdir(parents=True, exist_ok=True)
    setup = subprocess.run(
        ["swtpm_setup", "--tpm2", "--tpmstate", str(state), "--pcr-banks", "sha256,sha384",
         "--overwrite"],
        capture_output=True, text=True, check=False, timeout=120,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "XDG_CONFIG_HOME": str(state)},
    )  # fmt: skip
    if setup.returncode != 0:
        raise MeasuredBootError(f"swtpm_setup failed: {setup.stdout}{setup.stderr}")
    # The listening socket exists before swtpm starts, so QEMU can connect at once.
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(control))
        listener.listen(1)
        return subprocess.Popen(
            ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}",
             "--ctrl", f"type=unixio,fd={listener.fileno()}", "--terminate"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(listener.fileno(),),
        )  # fmt: skip
    finally:
        listener.close()


def measured_boot(
    *,
    workdir: Path,
    kernel: Path,
    initrd: Path | None,
    append: str,
    memory_mb: int,
    timeout: float,
) -> MeasuredBoot:
    """Boot once with OVMF + swtpm and parse the guest's report. Raises MeasuredBootError."""
    workdir.mkdir(parents=True, exist_ok=True)
    control = workdir / "swtpm.sock"
    control.unlink(missing_ok=True)
    swtpm = _start_swtpm(workdir / "tpm", control)
    try:
        variables = workdir / "OVMF_VARS.fd"
        shutil.copyfile(OVMF_VARS, variables)
        console, data = workdir / "console.log", workdir / "measurements.log"
        data.unlink(missing_ok=True)
        argv = [
            qemu.QEMU, "-machine", "q35", "-accel", "tcg", "-m", str(memory_mb),
            "-smp", "1", "-nodefaults", "-display", "none", "-no-reboot",
            "-drive", f"if=pflash,format=raw,unit=0,file={OVMF_CODE},readonly=on",
            "-drive", f"if=pflash,format=raw,unit=1,file={variables}",
            "-chardev", f"socket,id=chrtpm,path={control}",
            "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-crb,tpmdev=tpm0",
            "-serial", f"file:{console}", "-serial", f"file:{data}",
            "-kernel", str(kernel), "-append", append,
        ]  # fmt: skip
        if initrd is not None:
            argv += ["-initrd", str(initrd)]
        result = qemu.run_qemu(argv, console, timeout, "tcg")
    finally:
        swtpm.kill()
        swtpm.wait(timeout=30)
    text = data.read_text(encoding="ascii", errors="replace") if data.exists() else ""
    return _parse_report(text, result)


def _parse_report(text: str, result: qemu.BootResult) -> MeasuredBoot:
    if "END-MEASUREMENTS" not in text:
        raise MeasuredBootError(f"the guest did not report its measurements: {result.describe()}")
    encoded = text.split("BEGIN-EVENTLOG", 1)[1].split("END-EVENTLOG", 1)[0]
    event_log = base64.b64decode("".join(encoded.split()))
    pcrs = {
        int(number): bytes.fromhex(value)
        for number, value in re.findall(r"PCR-SHA384 (\d+) ([0-9A-Fa-f]{96})", text)
    }
    if sorted(pcrs) != list(PCRS):
        raise MeasuredBootError(f"the guest reported PCRs {sorted(pcrs)}, not {list(PCRS)}")
    return MeasuredBoot(event_log, pcrs, result)


def sha384(data: bytes) -> bytes:
    """SHA-384 of ``data``. Raises nothing."""
    return hashlib.sha384(data).digest()
