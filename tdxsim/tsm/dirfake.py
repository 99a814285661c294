"""A configfs-tsm directory for unit tests, without a kernel mount.

Plain files cannot compute ``outblob`` when they are read, so the fake splits the two jobs
a real configfs directory does:

* **file operations** (:class:`DirFake` methods ``mkdir``, ``rmdir``, ``listdir``,
  ``exists``, ``open``, ``read_bytes``, ``write_bytes``, ``read_text``, ``write_text``)
  carry the kernel's semantics, go through :mod:`tdxsim.tsm.configfs` and the model, and
  raise OSError with the kernel's errno. A configfs client written against a small
  file-ops interface with these os/pathlib-shaped names (the production implementation
  is a thin wrapper over ``os``) is tested by handing it the fake instead;
* **a mirror on disk**: after every operation the fake writes the same layout under
  ``root`` (``report/NAME/{provider,generation,inblob,outblob,...}`` with configfs's
  modes) holding what the kernel would show, so a test can look at the tree with plain
  ``os`` calls. The mirror is output only; writing to it has no effect.

The TD's firmware event log, when given, is a plain file of the mirror,
``root/.tdxsim-ccel`` (mode 0400, see :mod:`tdxsim.tsm.device`): a client reads the CCEL
with ordinary file I/O, as it reads sysfs, so the fake does not model it further.

Faults: :meth:`DirFake.fail` makes one operation on one path fail with an errno, once or N
times (before the kernel logic runs), and ``fake.faults`` (the model's
:class:`~tdxsim.tsm.faults.FaultPlan`) arms provider faults: GetQuote errors, a racing
writer, a stall, a missing or foreign provider.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tdx_boot_attest.tdxsim.tsm.configfs import REPORT_GROUP, AttrFile, ConfigfsView
from tdx_boot_attest.tdxsim.tsm.device import EVENT_LOG_FILE, EVENT_LOG_MODE
from tdx_boot_attest.tdxsim.tsm.errors import TsmError
from tdx_boot_attest.tdxsim.tsm.faults import FaultPlan
from tdx_boot_attest.tdxsim.tsm.model import AttrKind, TsmModel

OPERATIONS = frozenset({"mkdir", "rmdir", "listdir", "exists", "open", "read", "write", "close"})


@dataclass
class _CallFault:
    op: str
    pattern: str
    err: int
    remaining: int


class DirFake:
    """The tsm directory at ``root`` (use it where /sys/kernel/config/tsm would be), and
    ``event_log`` (the padded CCEL, see :mod:`tdxsim.tsm.device`) at ``event_log_path``."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        model: TsmModel,
        *,
        event_log: bytes | None = None,
    ) -> None:
        self.root = Path(root).absolute()
        self.model = model
        self.event_log = event_log
        self.view = ConfigfsView(model)
        self._lock = threading.Lock()
        self._call_faults: list[_CallFault] = []
        self.calls: list[tuple[str, str]] = []
        self._mirrored: dict[Path, bytes] = {}
        self._sync()
        if event_log is not None:
            _write_file(self.event_log_path, event_log, EVENT_LOG_MODE)

    @property
    def event_log_path(self) -> Path:
        """Where the event log is (absent when the fake has none). Raises nothing."""
        return self.root / EVENT_LOG_FILE

    @property
    def faults(self) -> FaultPlan:
        """The provider's fault plan (GetQuote errors, races, stalls, provider)."""
        return self.model.faults

    # -- per-call faults ------------------------------------------------------------------
    def fail(self, op: str, path: str, err: int, times: int = 1) -> None:
        """Make the next ``times`` calls of ``op`` on paths matching ``path`` fail with ``err``.

        ``path`` is relative to the tsm root and may use shell wildcards
        (``"report/*/outblob"``). Raises ValueError for an unknown op or times < 1.
        """
        if op not in OPERATIONS:
            raise ValueError(f"unknown operation {op!r}; use one of {sorted(OPERATIONS)}")
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._call_faults.append(_CallFault(op, path.strip("/"), err, times))

    def _check_fault(self, op: str, parts: Sequence[str]) -> None:
        rel = "/".join(parts)
        with self._lock:
            self.calls.append((op, rel))
            for fault in self._call_faults:
                if fault.op == op and fault.remaining and fnmatch.fnmatchcase(rel, fault.pattern):
                    fault.remaining -= 1
                    raise TsmError(fault.err, f"{op} {rel} (injected fault)")

    # -- file operations ------------------------------------------------------------------
    def mkdir(self, path: str | os.PathLike[str], mode: int = 0o777) -> None:
        """Like os.mkdir; raises OSError with the kernel's errno."""
        del mode  # configfs ignores the requested mode
        parts = self._parts(path)
        with _os_errors(path):
            self._check_fault("mkdir", parts)
            try:
                self.view.mkdir(parts)
            finally:
                self._sync()

    def rmdir(self, path: str | os.PathLike[str]) -> None:
        """Like os.rmdir (works on non-empty entries, as configfs does); raises OSError."""
        parts = self._parts(path)
        with _os_errors(path):
            self._check_fault("rmdir", parts)
            try:
                self.view.rmdir(parts)
            finally:
                self._sync()

    def listdir(self, path: str | os.PathLike[str]) -> list[str]:
        """Like os.listdir; raises OSError."""
        parts = self._parts(path)
        with _os_errors(path):
            self._check_fault("listdir", parts)
            return self.view.listdir(parts)

    def exists(self, path: str | os.PathLike[str]) -> bool:
        """Like os.path.exists (False on any error, as os.path.exists). Raises nothing."""
        try:
            parts = self._parts(path)
            self._check_fault("exists", parts)
            self.view.lookup(parts)
        except OSError:
            return False
        return True

    def open(self, path: str | os.PathLike[str], mode: str = "rb") -> FakeFile:
        """Open an attribute: modes r, rb, w, wb (and r+/w+, refused like the kernel does).

        Returns an unbuffered file object (read, write, close, context manager); raises
        OSError with the kernel's errno.
        """
        flags = _flags_for_mode(mode)
        parts = self._parts(path)
        with _os_errors(path):
            self._check_fault("open", parts)
            handle = self.view.open(parts, flags)
        return FakeFile(self, parts, handle, binary="b" in mode, path=str(path))

    def read_bytes(self, path: str | os.PathLike[str]) -> bytes:
        """Open, read to EOF and close, like Path.read_bytes; raises OSError."""
        with self.open(path, "rb") as handle:
            data = handle.read()
        return data if isinstance(data, bytes) else data.encode("ascii")

    def write_bytes(self, path: str | os.PathLike[str], data: bytes) -> int:
        """Open, write ``data`` in one call and close, like Path.write_bytes; raises OSError."""
        with self.open(path, "wb") as handle:
            return handle.write(data)

    def read_text(self, path: str | os.PathLike[str]) -> str:
        """Like Path.read_text (ASCII); raises OSError."""
        return self.read_bytes(path).decode("ascii")

    def write_text(self, path: str | os.PathLike[str], text: str) -> int:
        """Like Path.write_text (ASCII); raises OSError."""
        return self.write_bytes(path, text.encode("ascii"))

    # -- helpers --------------------------------------------------------------------------
    def _parts(self, path: str | os.PathLike[str]) -> list[str]:
        candidate = Path(path)
        if not candidate.is_absolute():
            candidate = self.root / candidate
        normalized = Path(os.path.normpath(candidate))
        try:
            rel = normalized.relative_to(self.root)
        except ValueError:
            raise OSError(
                errno.EXDEV, f"outside the tsm fake at {self.root}", os.fspath(path)
            ) from None
        return [part for part in rel.parts if part not in {"", "."}]

    def _sync(self) -> None:
        """Rewrite the on-disk mirror from the model."""
        with self._lock:
            group = self.root / REPORT_GROUP
            group.mkdir(parents=True, exist_ok=True)
            names = set(self.model.names())
            for stale in group.iterdir():
                if stale.name not in names:
                    _remove_tree(stale)
                    for path in [p for p in self._mirrored if p.parent == stale]:
                        del self._mirrored[path]
            for name in names:
                try:
                    entry = self.model.entry(name)
                except TsmError:
                    continue
                directory = group / name
                directory.mkdir(exist_ok=True)
                for attr in entry.attributes:
                    content = b""
                    if attr.kind is AttrKind.TEXT and attr.readable:
                        try:
                            content = self.model.show(entry, attr.name)
                        except TsmError:
                            content = b""
                    elif attr.name == "inblob":
                        content = entry.inblob
                    elif attr.readable and entry.read_generation == entry.write_generation:
                        blob = entry.outblob if attr.name == "outblob" else entry.auxblob
                        content = blob or b""
                    path = directory / attr.name
                    if self._mirrored.get(path) != content:
                        _write_file(path, content, attr.mode)
                        self._mirrored[path] = content


class FakeFile:
    """An open attribute of a :class:`DirFake` (unbuffered, like ``open(..., buffering=0)``)."""

    def __init__(
        self, fake: DirFake, parts: list[str], handle: AttrFile, *, binary: bool, path: str
    ) -> None:
        self.name = path
        self._fake = fake
        self._parts = parts
        self._handle = handle
        self._binary = binary
        self._offset = 0
        self.closed = False

    def read(self, size: int = -1) -> bytes | str:
        """Read up to ``size`` bytes (all to EOF when negative); raises OSError."""
        self._require_open()
        chunks: list[bytes] = []
        try:
            with _os_errors(self.name):
                self._fake._check_fault("read", self._parts)
                while size < 0 or sum(map(len, chunks)) < size:
                    want = 65536 if size < 0 else size - sum(map(len, chunks))
                    chunk = self._handle.read(want, self._offset)
                    if not chunk:
                        break
                    self._offset += len(chunk)
                    chunks.append(chunk)
                    if size >= 0:
                        break
        finally:
            self._fake._sync()
        data = b"".join(chunks)
        return data if self._binary else data.decode("ascii")

    def write(self, data: bytes | str) -> int:
        """Write all of ``data`` in one call at the current offset; raises OSError."""
        self._require_open()
        raw = data.encode("ascii") if isinstance(data, str) else bytes(data)
        with _os_errors(self.name):
            self._fake._check_fault("write", self._parts)
            written = self._handle.write(raw, self._offset)
        self._offset += written
        return written

    def close(self) -> None:
        """Close the file; binary writes are committed now. Raises OSError only when injected."""
        if self.closed:
            return
        self.closed = True
        try:
            with _os_errors(self.name):
                self._fake._check_fault("close", self._parts)
        finally:
            self._handle.release()
            self._fake._sync()

    def __enter__(self) -> FakeFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _require_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")


@contextmanager
def _os_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Raise what os would: OSError(errno, strerror, filename), so EEXIST is FileExistsError."""
    try:
        yield
    except TsmError as exc:
        err = exc.errno if exc.errno is not None else errno.EIO
        raise OSError(err, os.strerror(err), os.fspath(path)) from exc


def _flags_for_mode(mode: str) -> int:
    base = mode.replace("b", "").replace("t", "")
    flags = {"r": os.O_RDONLY, "w": os.O_WRONLY, "a": os.O_WRONLY, "r+": os.O_RDWR, "w+": os.O_RDWR}
    if base not in flags:
        raise ValueError(f"unsupported mode {mode!r}")
    return flags[base]


def _write_file(path: Path, content: bytes, mode: int) -> None:
    if path.exists():
        os.chmod(path, 0o600)
    path.write_bytes(content)
    os.chmod(path, mode)


def _remove_tree(path: Path) -> None:
    if path.is_dir():
        for child in path.iterdir():
            _remove_tree(child)
        path.rmdir()
    else:
        path.unlink()
