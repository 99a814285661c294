"""The configfs file layer over :class:`TsmModel`: paths, directories and open files.

Both front ends (the FUSE mount and the directory fake) go through this module, so they
share the kernel's file semantics (fs/configfs/file.c, dir.c):

* ``report`` is the only group where mkdir works; mkdir anywhere else is EPERM, rmdir of
  ``report`` or the root is EPERM, creating or unlinking files is EACCES / EPERM.
* text attributes call show() once per open, at the first read, and store() on every write;
* binary attributes buffer writes and commit them when the file is closed, ignoring the
  result (the kernel drops the error of the commit); a write past 64 bytes fails with EFBIG
  but the open still commits what was buffered; reads fetch the blob once per open, fail
  with EFBIG above 32 KiB, and mixing reads and writes on one open is ETXTBSY;
* opening without the attribute's permission is EACCES, also for root.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from tdx_boot_attest.tdxsim.tsm.errors import TsmError
from tdx_boot_attest.tdxsim.tsm.model import (
    INBLOB_MAX,
    OUTBLOB_MAX,
    Attribute,
    AttrKind,
    ReportEntry,
    TsmModel,
)

log = logging.getLogger(__name__)

REPORT_GROUP = "report"
ATTR_FILE_SIZE = 4096  # configfs_init_file() gives text attributes a page-sized i_size
_TEXT_WRITE_MAX = 4095  # SIMPLE_ATTR_SIZE - 1


class NodeKind(enum.Enum):
    """What a path names in the tsm tree."""

    ROOT = "root"
    GROUP = "group"
    ENTRY = "entry"
    ATTR = "attr"


@dataclass(frozen=True, slots=True)
class Node:
    """A resolved path: its kind and, below the group, its entry and attribute."""

    kind: NodeKind
    entry: ReportEntry | None = None
    attr: Attribute | None = None

    @property
    def is_dir(self) -> bool:
        """True for the root, the report group and report entries."""
        return self.kind is not NodeKind.ATTR

    @property
    def mode(self) -> int:
        """Permission bits (directories 0755, attributes 0444 or 0200)."""
        return self.attr.mode if self.attr is not None else 0o755

    @property
    def size(self) -> int:
        """st_size as configfs sets it: a page for text attributes, 0 for binary ones."""
        if self.attr is not None and self.attr.kind is AttrKind.TEXT:
            return ATTR_FILE_SIZE
        return 0


class ConfigfsView:
    """The ``tsm`` directory (as mounted at /sys/kernel/config/tsm) over one model."""

    def __init__(self, model: TsmModel) -> None:
        self.model = model

    def lookup(self, parts: Sequence[str]) -> Node:
        """Resolve path components below the tsm root; raises TsmError(ENOENT, ENOTDIR)."""
        if not parts:
            return Node(NodeKind.ROOT)
        if parts[0] != REPORT_GROUP:
            raise TsmError(errno.ENOENT, f"/{parts[0]} does not exist")
        if len(parts) == 1:
            return Node(NodeKind.GROUP)
        entry = self.model.entry(parts[1])
        if len(parts) == 2:
            return Node(NodeKind.ENTRY, entry)
        attr = entry.attribute(parts[2])
        if attr is None:
            raise TsmError(errno.ENOENT, f"{parts[1]}/{parts[2]} does not exist")
        if len(parts) > 3:
            raise TsmError(errno.ENOTDIR, f"{parts[1]}/{parts[2]} is not a directory")
        return Node(NodeKind.ATTR, entry, attr)

    def listdir(self, parts: Sequence[str]) -> list[str]:
        """Names in a directory; raises TsmError(ENOENT, ENOTDIR)."""
        node = self.lookup(parts)
        if node.kind is NodeKind.ROOT:
            return [REPORT_GROUP]
        if node.kind is NodeKind.GROUP:
            return self.model.names()
        if node.kind is NodeKind.ENTRY and node.entry is not None:
            return [attr.name for attr in node.entry.attributes]
        raise TsmError(errno.ENOTDIR, "not a directory")

    def mkdir(self, parts: Sequence[str]) -> None:
        """Create a report entry; raises TsmError (EPERM outside report/, EEXIST, ENXIO)."""
        if not parts:
            raise TsmError(errno.EEXIST, "the tsm root exists")
        parent = self.lookup(parts[:-1])
        if parent.kind is NodeKind.ATTR:
            raise TsmError(errno.ENOTDIR, "not a directory")
        if parent.kind is not NodeKind.GROUP:
            if parts[-1] in self.listdir(parts[:-1]):
                raise TsmError(errno.EEXIST, f"{parts[-1]} exists")
            raise TsmError(errno.EPERM, "only report/ accepts new entries")
        self.model.mkdir(parts[-1])

    def rmdir(self, parts: Sequence[str]) -> None:
        """Remove a report entry; raises TsmError (EPERM for default groups, ENOTDIR, ENOENT)."""
        node = self.lookup(parts)
        if node.kind is NodeKind.ATTR:
            raise TsmError(errno.ENOTDIR, "not a directory")
        if node.kind is not NodeKind.ENTRY:
            raise TsmError(errno.EPERM, "default groups cannot be removed")
        self.model.rmdir(parts[1])

    def unlink(self, parts: Sequence[str]) -> None:
        """configfs has no unlink: raises TsmError (EPERM, EISDIR, ENOENT) always."""
        node = self.lookup(parts)
        if node.is_dir:
            raise TsmError(errno.EISDIR, "is a directory")
        raise TsmError(errno.EPERM, "attributes cannot be removed")

    def create(self, parts: Sequence[str]) -> None:
        """configfs directories have no create: raises TsmError(EACCES, EEXIST, ENOENT)."""
        parent = self.lookup(parts[:-1])
        if not parent.is_dir:
            raise TsmError(errno.ENOTDIR, "not a directory")
        if parts and parts[-1] in self.listdir(parts[:-1]):
            raise TsmError(errno.EEXIST, f"{parts[-1]} exists")
        raise TsmError(errno.EACCES, "files cannot be created in configfs")

    def open(self, parts: Sequence[str], flags: int) -> AttrFile:
        """Open an attribute file with ``os.O_*`` flags; raises TsmError (EACCES, EISDIR)."""
        node = self.lookup(parts)
        accmode = flags & os.O_ACCMODE
        wants_read = accmode in {os.O_RDONLY, os.O_RDWR}
        wants_write = accmode in {os.O_WRONLY, os.O_RDWR}
        if node.is_dir:
            if wants_write:
                raise TsmError(errno.EISDIR, "is a directory")
            raise TsmError(errno.EISDIR, "directories are listed, not read")
        if node.entry is None or node.attr is None:
            raise TsmError(errno.ENOENT, "no such attribute")
        if wants_write and node.attr.readable:
            raise TsmError(errno.EACCES, f"{node.attr.name} is read-only")
        if wants_read and not node.attr.readable:
            raise TsmError(errno.EACCES, f"{node.attr.name} is write-only")
        return AttrFile(self.model, node.entry, node.attr)


class AttrFile:
    """One open file of an attribute, with configfs's per-open buffer."""

    def __init__(self, model: TsmModel, entry: ReportEntry, attr: Attribute) -> None:
        self._model = model
        self.entry = entry
        self.attr = attr
        self._lock = threading.Lock()
        self._filled: bytes | None = None
        self._buffer = bytearray()
        self._read_in_progress = False
        self._write_in_progress = False
        self._uncommitted = False

    def read(self, size: int, offset: int) -> bytes:
        """Read ``size`` bytes at ``offset``; raises TsmError with the kernel's errno."""
        with self._lock:
            if self._filled is None:
                if self.attr.kind is AttrKind.TEXT:
                    self._filled = self._model.show(self.entry, self.attr.name)
                else:
                    if self._write_in_progress:
                        raise TsmError(errno.ETXTBSY, "file is open for writing")
                    self._read_in_progress = True
                    blob = self._model.read_blob(self.entry, self.attr.name)
                    if not blob:
                        return b""  # configfs retries the fill on the next read
                    if len(blob) > OUTBLOB_MAX:
                        raise TsmError(errno.EFBIG, f"report exceeds {OUTBLOB_MAX} bytes")
                    self._filled = blob
            return self._filled[offset : offset + size]

    def write(self, data: bytes, offset: int) -> int:
        """Write ``data`` at ``offset``; returns bytes taken. Raises TsmError (EFBIG, ...)."""
        with self._lock:
            if self.attr.kind is AttrKind.TEXT:
                return self._model.store(self.entry, self.attr.name, data[:_TEXT_WRITE_MAX])
            if self._read_in_progress:
                raise TsmError(errno.ETXTBSY, "file is open for reading")
            self._write_in_progress = True
            self._uncommitted = True
            end = offset + len(data)
            if end > INBLOB_MAX:
                raise TsmError(errno.EFBIG, f"{self.attr.name} holds at most {INBLOB_MAX} bytes")
            if end > len(self._buffer):
                self._buffer.extend(b"\0" * (end - len(self._buffer)))
            self._buffer[offset:end] = data
            if not data:
                raise TsmError(errno.EFAULT, "empty write")
            return len(data)

    def commit(self) -> None:
        """Hand buffered binary writes to the model, as configfs does at close.

        Errors are logged and dropped: the kernel ignores the result of this commit.
        """
        with self._lock:
            if not self._uncommitted:
                return
            self._uncommitted = False
            data = bytes(self._buffer)
        try:
            self._model.write_blob(self.entry, self.attr.name, data)
        except TsmError as exc:
            log.debug("commit of %s/%s dropped: %s", self.entry.name, self.attr.name, exc)

    def release(self) -> None:
        """Close the file: commit pending writes. Raises nothing."""
        self.commit()
