"""LUKS unlock: wait for the device, run cryptsetup with the key on stdin, check the mapping.

The key travels only through a pipe to cryptsetup's stdin (``--key-file=-``): never in
argv, the environment or a file. In keyscript mode (crypttab ``keyscript=``) it goes to
our stdout, which the system's cryptroot pipes into its own cryptsetup.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from tdx_boot_attest.agent.errors import DiskError, LocalReason

BY_UUID_DIR: Final = Path("/dev/disk/by-uuid")
# cryptsetup's exit code for "no key available with this passphrase".
CRYPTSETUP_WRONG_KEY: Final = 2
_MAPPER_WAIT: Final = 5.0


class DeviceWaiter:
    """Waits (bounded) for a device given as ``UUID=...`` or a path.

    udev events wake the wait early when pyudev can listen; otherwise it polls.
    """

    def __init__(
        self,
        by_uuid_dir: Path = BY_UUID_DIR,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        poll_interval: float = 0.25,
        use_udev: bool = True,
    ) -> None:
        self.by_uuid_dir = by_uuid_dir
        self.clock = clock
        self.sleep = sleep
        self.poll_interval = poll_interval
        self.use_udev = use_udev

    def wait(self, spec: str, timeout: float) -> Path:
        """The device node for ``spec``, once it exists; raises DiskError(device_not_found)."""
        deadline = self.clock() + timeout
        monitor = self._monitor() if self.use_udev else None
        try:
            while True:
                found = self._resolve(spec)
                if found is not None:
                    return found
                remaining = deadline - self.clock()
                if remaining <= 0:
                    raise DiskError(
                        LocalReason.DEVICE_NOT_FOUND,
                        f"device {spec} did not appear within {timeout:g} s",
                    )
                step = min(self.poll_interval, remaining)
                if monitor is not None:
                    monitor.poll(timeout=step)
                else:
                    self.sleep(step)
        finally:
            if monitor is not None:
                _close_monitor(monitor)

    def _resolve(self, spec: str) -> Path | None:
        if spec.startswith("UUID="):
            uuid = spec[len("UUID=") :]
            link = self.by_uuid_dir / uuid.lower()
            if link.exists():
                return link
            return self._udev_lookup(uuid)
        path = Path(spec)
        return path if path.exists() else None

    def _udev_lookup(self, uuid: str) -> Path | None:
        if not self.use_udev:
            return None
        try:
            import pyudev

            context = pyudev.Context()
            for device in context.list_devices(subsystem="block", ID_FS_UUID=uuid.lower()):
                if device.device_node:
                    return Path(device.device_node)
        except Exception:  # noqa: S110 - no libudev/udev database: by-uuid is the fallback
            pass
        return None

    def _monitor(self) -> Any:
        try:
            import pyudev

            monitor = pyudev.Monitor.from_netlink(pyudev.Context())
            monitor.filter_by("block")
            monitor.start()
            return monitor
        except Exception:
            # No libudev or no netlink socket (containers, early initramfs): poll instead.
            return None


def _close_monitor(monitor: Any) -> None:
    # Closing a monitor that failed is harmless.
    with contextlib.suppress(Exception):
        monitor.stop()


class Cryptsetup:
    """Runs ``command + ["--key-file=-", *options, device, name]`` with the key on stdin."""

    def __init__(
        self,
        command: Sequence[str] = ("cryptsetup", "open"),
        *,
        check_mapper: bool = True,
        mapper_dir: Path = Path("/dev/mapper"),
        timeout: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.command = tuple(command)
        self.check_mapper = check_mapper
        self.mapper_dir = mapper_dir
        self.timeout = timeout
        self.clock = clock
        self.sleep = sleep

    def argv(self, device: Path, name: str, options: Sequence[str]) -> list[str]:
        """The command line (no key in it). Raises nothing."""
        return [*self.command, "--key-file=-", *options, str(device), name]

    def open(self, device: Path, name: str, key: bytearray, options: Sequence[str] = ()) -> None:
        """Open ``device`` as ``name`` with ``key``; raises DiskError.

        Reasons: key_rejected (cryptsetup: no key slot opens), cryptsetup_failed,
        mapper_missing (cryptsetup succeeded but /dev/mapper/NAME did not appear).
        """
        import subprocess

        argv = self.argv(device, name, options)
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=_minimal_env(),
                close_fds=True,
            )
        except OSError as exc:
            raise DiskError(
                LocalReason.CRYPTSETUP_FAILED, f"cannot run {argv[0]}: {exc.strerror}"
            ) from None
        stdin = process.stdin
        if stdin is None:  # pragma: no cover - Popen(stdin=PIPE) always sets it
            raise DiskError(LocalReason.CRYPTSETUP_FAILED, "no pipe to cryptsetup")
        try:
            write_all(stdin.fileno(), key)
        except BrokenPipeError:
            pass  # cryptsetup exited early; its status says why
        finally:
            stdin.close()
            # communicate() would flush the closed pipe; it has nothing more to send.
            process.stdin = None
        try:
            _, err = process.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise DiskError(
                LocalReason.CRYPTSETUP_FAILED, f"{argv[0]} did not finish in {self.timeout:g} s"
            ) from None
        detail = " ".join(err.decode("utf-8", "replace").split())[:300]
        if process.returncode == CRYPTSETUP_WRONG_KEY:
            raise DiskError(
                LocalReason.KEY_REJECTED,
                f"{device}: no key slot opens with the released key ({detail})",
            )
        if process.returncode != 0:
            raise DiskError(
                LocalReason.CRYPTSETUP_FAILED,
                f"{argv[0]} exited with {process.returncode} for {device}: {detail}",
            )
        if self.check_mapper:
            self._await_mapper(name)

    def _await_mapper(self, name: str) -> None:
        target = self.mapper_dir / name
        deadline = self.clock() + _MAPPER_WAIT
        while not target.exists():
            if self.clock() >= deadline:
                raise DiskError(
                    LocalReason.MAPPER_MISSING,
                    f"cryptsetup succeeded but {target} did not appear",
                )
            self.sleep(0.05)


def write_all(fd: int, data: bytearray) -> None:
    """Write every byte of ``data`` to ``fd`` without copying it into a bytes object.

    Raises OSError (BrokenPipeError when the reader is gone).
    """
    offset = 0
    with memoryview(data) as view:
        while offset < len(view):
            with view[offset:] as rest:
                offset += os.write(fd, rest)


def _minimal_env() -> dict[str, str]:
    # cryptsetup needs PATH (for udev helpers) and nothing of ours.
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C"}
