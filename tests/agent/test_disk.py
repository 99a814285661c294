"""agent.disk: bounded device wait, cryptsetup with the key on stdin, mapper check."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from tdx_boot_attest.agent.disk import Cryptsetup, DeviceWaiter, write_all
from tdx_boot_attest.agent.errors import DiskError, LocalReason

KEY = b"s3cret passphrase\x00\n\xff"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def recorder(tmp_path: Path, status: int = 0, stderr: str = "") -> tuple[Path, Path]:
    """A stand-in for cryptsetup that records its argv, environment and stdin."""
    out = tmp_path / "record"
    script = tmp_path / "fake-cryptsetup"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > {out}.argv\n'
        f"env > {out}.env\n"
        f"cat > {out}.stdin\n"
        f'[ -n "{stderr}" ] && echo "{stderr}" >&2\n'
        f"exit {status}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, out


def test_path_device_found_at_once(tmp_path: Path) -> None:
    device = tmp_path / "disk.img"
    device.touch()
    assert DeviceWaiter(use_udev=False).wait(str(device), 1) == device


def test_device_appearing_later_is_found(tmp_path: Path) -> None:
    device = tmp_path / "late.img"
    timer = threading.Timer(0.3, device.touch)
    timer.start()
    try:
        assert DeviceWaiter(poll_interval=0.05).wait(str(device), 5) == device
    finally:
        timer.cancel()


def test_device_that_never_appears_is_bounded(tmp_path: Path) -> None:
    clock = FakeClock()
    waiter = DeviceWaiter(clock=clock, sleep=clock.sleep, use_udev=False)
    with pytest.raises(DiskError) as caught:
        waiter.wait(str(tmp_path / "never"), 3)
    assert caught.value.reason == LocalReason.DEVICE_NOT_FOUND
    assert "within 3 s" in caught.value.message
    assert clock.now == pytest.approx(3)


def test_uuid_resolves_through_by_uuid(tmp_path: Path) -> None:
    by_uuid = tmp_path / "by-uuid"
    by_uuid.mkdir()
    target = tmp_path / "vda2"
    target.touch()
    (by_uuid / "0b2a1c2e-aaaa").symlink_to(target)
    waiter = DeviceWaiter(by_uuid_dir=by_uuid, use_udev=False)
    assert waiter.wait("UUID=0B2A1C2E-AAAA", 1).resolve() == target


def test_cryptsetup_gets_the_key_on_stdin_only(tmp_path: Path) -> None:
    script, out = recorder(tmp_path)
    device = tmp_path / "disk.img"
    device.touch()
    cryptsetup = Cryptsetup(command=(str(script), "open"), check_mapper=False)
    cryptsetup.open(device, "root", bytearray(KEY), ("--allow-discards",))
    argv = Path(f"{out}.argv").read_text().splitlines()
    assert argv == ["open", "--key-file=-", "--allow-discards", str(device), "root"]
    assert Path(f"{out}.stdin").read_bytes() == KEY
    environment = Path(f"{out}.env").read_bytes()
    assert KEY not in environment
    assert b"s3cret" not in environment


def test_wrong_key_is_key_rejected(tmp_path: Path) -> None:
    script, _ = recorder(tmp_path, status=2, stderr="No key available with this passphrase.")
    cryptsetup = Cryptsetup(command=(str(script),), check_mapper=False)
    with pytest.raises(DiskError) as caught:
        cryptsetup.open(tmp_path, "root", bytearray(KEY))
    assert caught.value.reason == LocalReason.KEY_REJECTED
    assert "No key available" in caught.value.message


def test_other_failures_are_cryptsetup_failed(tmp_path: Path) -> None:
    script, _ = recorder(tmp_path, status=5, stderr="Device busy.")
    with pytest.raises(DiskError) as caught:
        Cryptsetup(command=(str(script),), check_mapper=False).open(tmp_path, "r", bytearray(KEY))
    assert caught.value.reason == LocalReason.CRYPTSETUP_FAILED
    assert "exited with 5" in caught.value.message


def test_missing_cryptsetup_binary(tmp_path: Path) -> None:
    with pytest.raises(DiskError) as caught:
        Cryptsetup(command=(str(tmp_path / "nope"),)).open(tmp_path, "r", bytearray(KEY))
    assert caught.value.reason == LocalReason.CRYPTSETUP_FAILED


def test_mapper_must_appear(tmp_path: Path) -> None:
    script, _ = recorder(tmp_path)
    clock = FakeClock()
    mapper = tmp_path / "mapper"
    mapper.mkdir()
    cryptsetup = Cryptsetup(
        command=(str(script),), mapper_dir=mapper, clock=clock, sleep=clock.sleep
    )
    with pytest.raises(DiskError) as caught:
        cryptsetup.open(tmp_path, "root", bytearray(KEY))
    assert caught.value.reason == LocalReason.MAPPER_MISSING
    (mapper / "root").touch()
    cryptsetup.open(tmp_path, "root", bytearray(KEY))


def test_write_all_leaves_the_buffer_resizable() -> None:
    read_fd, write_fd = os.pipe()
    buffer = bytearray(KEY)
    try:
        write_all(write_fd, buffer)
        os.close(write_fd)
        assert os.read(read_fd, 1024) == KEY
    finally:
        os.close(read_fd)
    del buffer[:]  # would raise BufferError if a memoryview export were still alive
    assert buffer == bytearray()


@pytest.mark.slow
def test_real_cryptsetup_test_passphrase(tmp_path: Path) -> None:
    image = tmp_path / "luks.img"
    with image.open("wb") as handle:
        handle.truncate(20 * 1024 * 1024)
    key_file = tmp_path / "format-key"
    key_file.write_bytes(KEY)
    subprocess.run(
        [
            "cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode",
            "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
            "--key-file", str(key_file), str(image),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    key_file.unlink()
    cryptsetup = Cryptsetup(command=("cryptsetup", "open", "--test-passphrase"), check_mapper=False)
    cryptsetup.open(image, "test", bytearray(KEY))
    with pytest.raises(DiskError) as caught:
        cryptsetup.open(image, "test", bytearray(b"wrong"))
    assert caught.value.reason == LocalReason.KEY_REJECTED
