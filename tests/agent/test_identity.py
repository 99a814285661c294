"""agent.identity: the per-boot identity key, made once, kept on tmpfs only, mode 0600."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tdx_boot_attest.agent import protocol
from tdx_boot_attest.agent.errors import LocalReason
from tdx_boot_attest.agent.identity import (
    IdentityUnavailable,
    check_in_memory,
    filesystem_type,
    load_identity,
    load_or_create_identity,
)

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw
30 25 0:27 / /dev/shm rw,relatime shared:5 - ext4 /dev/vdb rw
31 27 0:28 / /run rw,nosuid,nodev shared:12 master:1 - tmpfs tmpfs rw,mode=755
32 31 0:29 / /run/user/1000 rw - ext4 /dev/vdc rw
33 27 0:30 / /mnt/with\\040space rw - ramfs none rw
"""


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/run/tdx-boot-attest", "tmpfs"),
        ("/run", "tmpfs"),
        ("/running", "ext4"),  # a prefix of a mount point's name is not inside it
        ("/run/user/1000/x", "ext4"),  # the longest mount point wins
        ("/dev/shm/a", "ext4"),  # the last of two stacked mounts wins
        ("/mnt/with space/key", "ramfs"),  # mountinfo escapes spaces
        ("/etc", "ext4"),
    ],
)
def test_the_file_system_of_a_path(path: str, kind: str) -> None:
    assert filesystem_type(Path(path), MOUNTINFO) == kind


def test_no_mount_covers_a_relative_path() -> None:
    assert filesystem_type(Path("relative"), MOUNTINFO) is None
    assert filesystem_type(Path("/x"), "garbage line\n") is None


def fake_mountinfo(tmp_path: Path, directory: Path, kind: str) -> Path:
    path = tmp_path / "mountinfo"
    target = os.path.realpath(directory)
    path.write_text(f"1 0 8:1 / / rw - ext4 /dev/sda rw\n2 1 0:9 / {target} rw - {kind} x rw\n")
    return path


def test_a_key_on_disk_is_refused_and_never_written(tmp_path: Path) -> None:
    key = tmp_path / "id" / "identity.key"
    mountinfo = fake_mountinfo(tmp_path, tmp_path / "id", "ext4")
    with pytest.raises(IdentityUnavailable) as caught:
        load_or_create_identity(key, mountinfo)
    assert caught.value.reason == LocalReason.IDENTITY_UNAVAILABLE
    assert caught.value.exit_code == 3
    assert "ext4" in caught.value.message
    assert list((tmp_path / "id").iterdir()) == []


def test_an_unreadable_mount_table_fails_closed(tmp_path: Path) -> None:
    with pytest.raises(IdentityUnavailable, match="cannot read"):
        check_in_memory(tmp_path, tmp_path / "no-mountinfo")


def test_ramfs_is_memory_too(tmp_path: Path) -> None:
    check_in_memory(tmp_path, fake_mountinfo(tmp_path, tmp_path, "ramfs"))


def test_made_once_with_mode_0600_then_read_back(memory_dir: Path) -> None:
    path = memory_dir / "tdx-boot-attest" / "identity.key"
    first = load_or_create_identity(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert path.stat().st_size == protocol.IDENTITY_KEY_BYTES
    assert list(path.parent.iterdir()) == [path], "no temporary file is left behind"
    again = load_or_create_identity(path)
    runtime = load_identity(path)
    assert first.public_key == again.public_key == runtime.public_key
    message = protocol.runtime_signature_message("node-1", bytes(32), b"quote")
    assert protocol.identity_signature_is_valid(first.public_key, runtime.sign(message), message)
    assert path.read_bytes().hex() not in repr(first)


def test_concurrent_runs_of_one_boot_agree_on_one_key(memory_dir: Path) -> None:
    path = memory_dir / "tdx-boot-attest" / "identity.key"
    code = (
        "import sys; from pathlib import Path; from agent.identity import load_or_create_identity;"
        "print(load_or_create_identity(Path(sys.argv[1])).public_key.hex())"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE)
        for _ in range(6)
    ]
    keys = {run.communicate(timeout=60)[0].strip() for run in runs}
    assert all(run.returncode == 0 for run in runs)
    assert keys == {load_identity(path).public_key.hex().encode()}


def test_runtime_without_a_key_says_the_boot_made_none(memory_dir: Path) -> None:
    with pytest.raises(IdentityUnavailable, match="protocol v2"):
        load_identity(memory_dir / "tdx-boot-attest" / "identity.key")
    (memory_dir / "tdx-boot-attest").mkdir(mode=0o700)
    with pytest.raises(IdentityUnavailable, match="protocol v2"):
        load_identity(memory_dir / "tdx-boot-attest" / "identity.key")


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda p: p.chmod(0o644), "mode 0600"),
        (lambda p: p.write_bytes(b"\x01" * 33), "not 32 bytes"),
        (lambda p: p.write_bytes(b""), "not 32 bytes"),
    ],
)
def test_a_damaged_key_file_is_refused(memory_dir: Path, damage: object, fragment: str) -> None:
    path = memory_dir / "tdx-boot-attest" / "identity.key"
    load_or_create_identity(path)
    assert callable(damage)
    damage(path)
    with pytest.raises(IdentityUnavailable, match=fragment):
        load_identity(path)
    with pytest.raises(IdentityUnavailable, match=fragment):
        load_or_create_identity(path)


def test_a_symbolic_link_is_never_followed(memory_dir: Path, tmp_path: Path) -> None:
    directory = memory_dir / "tdx-boot-attest"
    directory.mkdir(mode=0o700)
    elsewhere = tmp_path / "planted.key"
    elsewhere.write_bytes(b"\x02" * 32)
    elsewhere.chmod(0o600)
    (directory / "identity.key").symlink_to(elsewhere)
    with pytest.raises(IdentityUnavailable, match="symbolic link"):
        load_or_create_identity(directory / "identity.key")
    linked_dir = memory_dir / "linked"
    linked_dir.symlink_to(directory)
    with pytest.raises(IdentityUnavailable, match="not a directory"):
        load_identity(linked_dir / "identity.key")


def test_a_directory_others_may_write_is_refused(memory_dir: Path) -> None:
    directory = memory_dir / "tdx-boot-attest"
    directory.mkdir()
    directory.chmod(0o777)
    with pytest.raises(IdentityUnavailable, match="writable by it alone"):
        load_or_create_identity(directory / "identity.key")
    assert list(directory.iterdir()) == []
