"""Boot a kernel + initramfs in qemu-system-x86_64 with the serial console in a file.

KVM is used when it works (``TDX_VM_ACCEL=kvm|tcg|auto``, default auto: a short probe
boot must print the kernel banner under KVM, else software emulation). Every boot has a
hard timeout after which QEMU is killed; the result carries the console text so a
failing test can show its tail.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

QEMU: Final = "qemu-system-x86_64"
MEMORY_MB: Final = 1536
PROBE_SECONDS: Final = 10.0
_KERNEL_RECORD = re.compile(r"\[\s*(\d+\.\d+)\] ([^\n]*)")
_accel_cache: dict[Path, str] = {}


@dataclass(frozen=True)
class BootResult:
    """What one boot did: console text, QEMU's exit status (None if killed), wall time."""

    console: str
    returncode: int | None
    timed_out: bool
    seconds: float
    accel: str

    def tail(self, lines: int = 60) -> str:
        """The last ``lines`` console lines, for assertion messages."""
        return "\n".join(self.console.splitlines()[-lines:])

    def describe(self) -> str:
        """A one-paragraph summary plus the console tail, for assertion messages."""
        how = "killed after the timeout" if self.timed_out else f"exit {self.returncode}"
        return f"QEMU ({self.accel}) {how} after {self.seconds:.1f} s; console tail:\n{self.tail()}"

    def kernel_time(self, needle: str) -> float | None:
        """The printk timestamp (seconds since kernel start) of the first kernel record with needle.

        The serial console carries two writers: the kernel prints each record whole, as
        ``[ seconds] text`` up to a newline, while user-space output on /dev/console (the
        agent's stderr copy of a line it also logs through /dev/kmsg, shell progress text
        without a newline) can stop anywhere and resume after a kernel record. So a line
        may start with a user-space fragment, or hold the needle first in an unstamped
        copy and then again in the kernel's stamped record. Only the kernel's records are
        parsed here: each timestamp and the text it stamps, wherever on the line it starts.
        """
        for match in _KERNEL_RECORD.finditer(self.console):
            if needle in match.group(2):
                return float(match.group(1))
        return None

    def kernel_record(self, needle: str) -> str | None:
        """The text of the first kernel record with ``needle`` (see kernel_time), without
        its timestamp; None when no record has it."""
        for match in _KERNEL_RECORD.finditer(self.console):
            if needle in match.group(2):
                return match.group(2)
        return None


def qemu_command(
    *,
    kernel: Path,
    initrd: Path | None,
    append: str,
    console: Path,
    accel: str,
    disk: Path | None = None,
    network: bool = True,
    fw_cfg: Sequence[tuple[str, Path]] = (),
) -> list[str]:
    """The QEMU argv: no display, serial console to a file, virtio disk and NIC, and
    ``fw_cfg`` files (name, host file) the guest reads under /sys/firmware/qemu_fw_cfg."""
    argv = [
        QEMU,
        "-accel", accel,
        "-m", str(MEMORY_MB),
        "-smp", "2",
        "-nodefaults",
        "-display", "none",
        "-no-reboot",
        "-serial", f"file:{console}",
        "-kernel", str(kernel),
        "-append", append,
    ]  # fmt: skip
    if accel == "kvm":
        argv += ["-cpu", "host"]
    if initrd is not None:
        argv += ["-initrd", str(initrd)]
    if network:
        # User networking: the guest reaches the host's 127.0.0.1 as 10.0.2.2.
        argv += ["-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0"]
    for name, path in fw_cfg:
        argv += ["-fw_cfg", f"name={name},file={path}"]
    if disk is not None:
        # snapshot=on: every boot sees the pristine disk; writes stay in QEMU.
        argv += [
            "-drive", f"file={disk},format=raw,if=none,id=disk0,snapshot=on",
            "-device", "virtio-blk-pci,drive=disk0",
        ]  # fmt: skip
    return argv


def run_qemu(argv: list[str], console: Path, timeout: float, accel: str) -> BootResult:
    """Run QEMU until it exits or ``timeout`` seconds pass (then kill it)."""
    console.unlink(missing_ok=True)
    started = time.monotonic()
    log = console.with_suffix(".qemu.log")
    with log.open("wb") as stderr:
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            returncode: int | None = process.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
            returncode, timed_out = None, True
    text = console.read_text(encoding="utf-8", errors="replace") if console.exists() else ""
    errors = log.read_text(encoding="utf-8", errors="replace").strip()
    if errors:
        text += f"\n[qemu stderr]\n{errors}\n"
    return BootResult(text, returncode, timed_out, time.monotonic() - started, accel)


def choose_accel(kernel: Path, workdir: Path) -> str:
    """``kvm`` when TDX_VM_ACCEL says so or a probe boot shows KVM works, else ``tcg``."""
    wanted = os.environ.get("TDX_VM_ACCEL", "auto")
    if wanted in {"kvm", "tcg"}:
        return wanted
    if kernel in _accel_cache:
        return _accel_cache[kernel]
    accel = "tcg"
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        console = workdir / "kvm-probe.console"
        argv = qemu_command(
            kernel=kernel,
            initrd=None,
            append="console=ttyS0 panic=-1",
            console=console,
            accel="kvm",
            network=False,
        )
        result = run_qemu(argv, console, PROBE_SECONDS, "kvm")
        if "Linux version" in result.console:
            accel = "kvm"
    _accel_cache[kernel] = accel
    return accel


def boot(
    *,
    kernel: Path,
    initrd: Path,
    disk: Path,
    append: str,
    console: Path,
    timeout: float,
    fw_cfg: Sequence[tuple[str, Path]] = (),
) -> BootResult:
    """Boot once; see BootResult. Raises nothing for guest failures (the result says)."""
    accel = choose_accel(kernel, console.parent)
    argv = qemu_command(
        kernel=kernel,
        initrd=initrd,
        append=append,
        console=console,
        accel=accel,
        disk=disk,
        fw_cfg=fw_cfg,
    )
    return run_qemu(argv, console, timeout, accel)
