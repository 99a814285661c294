"""The per-boot identity key (protocol v2): made once per boot, kept only in memory.

At boot the agent makes an Ed25519 key pair and binds its public key into the boot
attestation's REPORTDATA; the verifier records it with the accepted boot and attaches it
to the server registered from that boot. Runtime attestation then proves it comes from
the same TD: its quote binds the public key and it carries the private key's signature.

The private key is a file of 32 raw bytes (the RFC 8032 private key), mode 0600, on a
memory file system only (tmpfs or ramfs): by default /run/tdx-boot-attest/identity.key
(``[identity] path``, agent.config),
which initramfs-tools and dracut carry over switch_root, so the runtime unit finds it
and a reboot forgets it. The agent refuses to create or read it anywhere else. Every
agent run of one boot (keyscript once per volume, then runtime attestation) uses the
same key: the first run creates it, atomically, and the others read it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Final

from tdx_boot_attest.agent.errors import AgentError, LocalReason
from tdx_boot_attest.agent.protocol import IDENTITY_KEY_BYTES

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ed25519

DEFAULT_MOUNTINFO: Final = Path("/proc/self/mountinfo")
# rootfs: an initramfs's own root (ramfs or tmpfs) when nothing is mounted over the path.
MEMORY_FILESYSTEMS: Final = frozenset({"tmpfs", "ramfs", "rootfs"})
_MOUNTINFO_ESCAPES: Final = {"\\040": " ", "\\011": "\t", "\\012": "\n", "\\134": "\\"}


class IdentityUnavailable(AgentError):
    """The per-boot identity key cannot be made, kept in memory or read back."""

    exit_code = 3

    def __init__(self, message: str) -> None:
        super().__init__(LocalReason.IDENTITY_UNAVAILABLE, message)


class Identity:
    """The per-boot Ed25519 key pair (the private half stays inside ``cryptography``)."""

    def __init__(self, private_key: ed25519.Ed25519PrivateKey, path: Path) -> None:
        self._private_key = private_key
        self.path = path
        self.public_key = private_key.public_key().public_bytes_raw()

    def __repr__(self) -> str:
        return f"Identity(public_key={self.public_key.hex()!r}, path={str(self.path)!r})"

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``. Raises nothing."""
        return self._private_key.sign(message)


def filesystem_type(path: Path, mountinfo: str) -> str | None:
    """The type of the file system ``path`` (absolute, resolved) lives on, from the text
    of /proc/self/mountinfo; None when no mount covers it. Raises nothing.

    The longest mount point that contains ``path`` wins; among equal mount points, the
    last one listed (it is mounted over the others).
    """
    best: tuple[int, str] | None = None
    target = str(path)
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if "-" not in fields[6:] or len(fields) < 7:
            continue
        separator = fields.index("-", 6)
        if separator + 1 >= len(fields):
            continue
        mount_point = _unescape(fields[4])
        if not _contains(mount_point, target):
            continue
        if best is None or len(mount_point) >= best[0]:
            best = (len(mount_point), fields[separator + 1])
    return None if best is None else best[1]


def _unescape(text: str) -> str:
    for escaped, plain in _MOUNTINFO_ESCAPES.items():
        text = text.replace(escaped, plain)
    return text


def _contains(mount_point: str, path: str) -> bool:
    if mount_point == "/":
        return path.startswith("/")
    return path == mount_point or path.startswith(mount_point.rstrip("/") + "/")


def check_in_memory(directory: Path, mountinfo_path: Path = DEFAULT_MOUNTINFO) -> None:
    """Make sure ``directory`` is on a memory file system (tmpfs, ramfs or rootfs).

    Raises IdentityUnavailable naming the file system found, or why none could be.
    """
    resolved = Path(os.path.realpath(directory))
    try:
        mountinfo = mountinfo_path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise IdentityUnavailable(
            f"cannot read {mountinfo_path} ({exc.strerror}), so cannot tell whether "
            f"{resolved} keeps the identity key in memory only"
        ) from None
    kind = filesystem_type(resolved, mountinfo)
    if kind not in MEMORY_FILESYSTEMS:
        raise IdentityUnavailable(
            f"{resolved} is on {kind or 'no known file system'}, not tmpfs or ramfs: the "
            "identity key must never reach a disk; point [identity] path at /run "
            "(a tmpfs in every initramfs)"
        )


def load_or_create_identity(path: Path, mountinfo_path: Path = DEFAULT_MOUNTINFO) -> Identity:
    """This boot's identity: read it from ``path``, or make it there when absent.

    Creation is atomic (a private temporary file, then a hard link that fails when
    another run was first: that run's key is used). Raises IdentityUnavailable when the
    directory is not on a memory file system, or the key cannot be made or read.
    """
    directory = path.parent
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise IdentityUnavailable(f"cannot create {directory}: {exc.strerror}") from None
    _check_directory(directory)
    check_in_memory(directory, mountinfo_path)
    try:
        os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        _create(path)
    except OSError as exc:
        raise IdentityUnavailable(f"cannot look at {path}: {exc.strerror}") from None
    return _read(path)


def load_identity(path: Path, mountinfo_path: Path = DEFAULT_MOUNTINFO) -> Identity:
    """This boot's identity as the boot attestation made it (for runtime attestation).

    Raises IdentityUnavailable when there is none, or it is not where it must be.
    """
    if not path.parent.is_dir():
        raise _missing(path)
    _check_directory(path.parent)
    check_in_memory(path.parent, mountinfo_path)
    return _read(path)


def _missing(path: Path) -> IdentityUnavailable:
    return IdentityUnavailable(
        f"no identity key at {path}: this boot was not attested by a protocol v2 agent "
        "(or /run was not carried over from the initramfs); boot an image whose initramfs "
        "has the current agent"
    )


def _check_directory(directory: Path) -> None:
    try:
        info = os.stat(directory, follow_symlinks=False)
    except OSError as exc:
        raise IdentityUnavailable(f"cannot look at {directory}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise IdentityUnavailable(f"{directory} is not a directory (a symbolic link?)")
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise IdentityUnavailable(
            f"{directory} must belong to uid {os.geteuid()} and be writable by it alone "
            f"(it is uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):04o})"
        )


def _create(path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    secret = ed25519.Ed25519PrivateKey.generate().private_bytes_raw()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(temporary, flags, 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(secret)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        # When another run of this boot made it first, its key is the one.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    except OSError as exc:
        raise IdentityUnavailable(f"cannot write the identity key {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def _read(path: Path) -> Identity:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise _missing(path) from None
    except OSError as exc:
        raise IdentityUnavailable(
            f"cannot open the identity key {path}: {exc.strerror} (a symbolic link?)"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise IdentityUnavailable(f"the identity key {path} is not a regular file")
        if info.st_uid != os.geteuid() or info.st_mode & 0o077:
            raise IdentityUnavailable(
                f"the identity key {path} must belong to uid {os.geteuid()} with mode 0600 "
                f"(it is uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):04o})"
            )
        data = b""
        while len(data) <= IDENTITY_KEY_BYTES:
            chunk = os.read(fd, IDENTITY_KEY_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise IdentityUnavailable(f"cannot read the identity key {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) != IDENTITY_KEY_BYTES:
        raise IdentityUnavailable(
            f"the identity key {path} is not {IDENTITY_KEY_BYTES} bytes: it was not made by "
            "this agent"
        )
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return Identity(ed25519.Ed25519PrivateKey.from_private_bytes(data), path)
