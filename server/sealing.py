"""Passphrases at rest: AES-256-GCM under the master key, bound to the image name."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tdx_boot_attest.server.errors import ConfigurationError, ServerError

MASTER_KEY_BYTES = 32
SEAL_VERSION = b"\x01"
GCM_NONCE_BYTES = 12
AAD_PREFIX = b"tdx-boot-attest v1 image-passphrase:"
KDF_INFO_PREFIX = b"tdx-boot-attest v1 derived key:"
# Dev mode without a key file uses this fixed, public key: sealing is then only obfuscation.
DEV_MASTER_KEY = bytes(MASTER_KEY_BYTES)


class SealError(ServerError):
    """A sealed value cannot be opened (wrong master key or tampered row)."""


class MasterKey:
    """The key that seals image passphrases; its bytes never leave this object."""

    __slots__ = ("_aead", "_key", "is_dev")

    def __init__(self, key: bytes, *, is_dev: bool = False) -> None:
        if len(key) != MASTER_KEY_BYTES:
            raise ConfigurationError(f"master key must be {MASTER_KEY_BYTES} bytes")
        self._aead = AESGCM(key)
        self._key = key
        self.is_dev = is_dev

    def derive_key(self, purpose: bytes, salt: bytes, length: int = 32) -> bytes:
        """A key for ``purpose`` (HKDF-SHA256 of the master key with ``salt``).

        Different purposes give independent keys; the master key itself never leaves this
        object. Raises nothing.
        """
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        return HKDF(hashes.SHA256(), length, salt, KDF_INFO_PREFIX + purpose).derive(self._key)

    def __repr__(self) -> str:
        return "MasterKey(<redacted>)"

    def seal(self, passphrase: bytes, image_name: str) -> bytes:
        """Encrypt ``passphrase`` for storage under ``image_name``. Raises nothing."""
        nonce = secrets.token_bytes(GCM_NONCE_BYTES)
        return SEAL_VERSION + nonce + self._aead.encrypt(nonce, passphrase, _aad(image_name))

    def unseal(self, sealed: bytes, image_name: str) -> bytes:
        """Decrypt a stored passphrase; raises SealError when it does not authenticate."""
        if sealed[:1] != SEAL_VERSION or len(sealed) < 1 + GCM_NONCE_BYTES + 16:
            raise SealError("sealed passphrase has an unknown format")
        nonce = sealed[1 : 1 + GCM_NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, sealed[1 + GCM_NONCE_BYTES :], _aad(image_name))
        except InvalidTag:
            raise SealError(
                f"sealed passphrase of image {image_name!r} does not open with this master key"
            ) from None


def _aad(image_name: str) -> bytes:
    return AAD_PREFIX + image_name.encode("utf-8")


def generate_master_key_file(path: Path) -> bool:
    """Create ``path`` (mode 0600) holding a new random key as hex, and its directory
    (mode 0700) when it is missing; returns whether the directory was created.

    Raises ConfigurationError when the file exists or cannot be written.
    """
    created = _make_key_directory(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigurationError(
            f"{path} exists; refusing to overwrite a master key (the passphrases sealed "
            "under it would be lost). To rotate it, generate the new key at another path, "
            "set master_key_file to that path and run 'tdx-attest-server image "
            "rotate-passphrase NAME --passphrase-file FILE' for every image"
        ) from None
    except OSError as exc:
        raise ConfigurationError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secrets.token_bytes(MASTER_KEY_BYTES).hex() + "\n")
    return created


def _make_key_directory(directory: Path) -> bool:
    """Create ``directory`` (and its parents) with mode 0700 when it is missing; returns
    whether it was created. Raises ConfigurationError naming the directory."""
    if directory.is_dir():
        return False
    try:
        # The mode is applied to every directory created, so no parent is world-readable
        # while the key is being written.
        old_umask = os.umask(0o077)
        try:
            directory.mkdir(mode=0o700, parents=True)
        finally:
            os.umask(old_umask)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the directory {directory} for the master key: {exc.strerror}; "
            "create it (mode 0700) or choose another path"
        ) from None
    return True


def load_master_key(path: Path | None, *, dev_mode: bool) -> MasterKey:
    """Read the master key file (64 hex characters or 32 raw bytes, not group/world readable).

    Without a file, dev mode gets a fixed public key; otherwise raises ConfigurationError.
    """
    if path is None:
        if dev_mode:
            return MasterKey(DEV_MASTER_KEY, is_dev=True)
        raise ConfigurationError(
            "no master key file configured (set TDX_ATTEST_MASTER_KEY_FILE, "
            "or TDX_ATTEST_DEV_MODE=1 for an insecure development setup)"
        )
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        hint = (
            f"; create one with 'tdx-attest-server master-key generate {path}'"
            if isinstance(exc, FileNotFoundError)
            else ""
        )
        raise ConfigurationError(
            f"cannot read master key file {path}: {exc.strerror}{hint}"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(
            f"master key file {path} is readable by group or others "
            f"(mode {stat.S_IMODE(mode):o}); run 'chmod 600 {path}'"
        )
    return MasterKey(_decode_key(data, path))


def _decode_key(data: bytes, path: Path) -> bytes:
    if len(data) == MASTER_KEY_BYTES:
        return data
    text = data.strip()
    if len(text) == 2 * MASTER_KEY_BYTES:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    raise ConfigurationError(
        f"master key file {path} must hold {MASTER_KEY_BYTES} bytes as hex or raw"
    )
