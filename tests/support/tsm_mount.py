"""Run ``tdxsim mount`` in a subprocess for tests that go through the kernel's VFS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CONTROL_FILE = ".tdxsim-faults"


class MountFailed(RuntimeError):
    """The FUSE mount did not come up (or did not go away) in time."""


def is_mounted(path: Path) -> bool:
    """True when ``path`` is a mount point, also when its FUSE server died (a stale mount)."""
    target = os.path.realpath(path)
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 1 and fields[1].replace("\\040", " ") == target:
                return True
    return False


def _wait(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise MountFailed(f"timed out waiting for {what}")
        time.sleep(0.02)


@contextmanager
def mounted_tsm(
    state_dir: Path, mountpoint: Path, *extra_args: str, timeout: float = 20.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Mount the simulated configfs-tsm at ``mountpoint``; unmount (SIGTERM) on exit.

    Raises MountFailed when the mount does not appear; the process's stderr is in the
    message.
    """
    mountpoint.mkdir(parents=True, exist_ok=True)
    log_path = mountpoint.parent / f"{mountpoint.name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tdxsim",
                "mount",
                "--state",
                str(state_dir),
                *extra_args,
                str(mountpoint),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            _wait(lambda: is_mounted(mountpoint) or proc.poll() is not None, timeout, "mount")
        except MountFailed:
            proc.kill()
            raise
        if proc.poll() is not None:
            raise MountFailed(f"tdxsim mount exited {proc.returncode}: {log_path.read_text()}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if is_mounted(mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)


def arm_fault(mountpoint: Path, spec: str) -> None:
    """Write one fault spec line to the mount's control file. Raises OSError if refused."""
    with open(mountpoint / CONTROL_FILE, "w", encoding="utf-8") as control:
        control.write(spec + "\n")
