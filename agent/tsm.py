"""configfs-tsm client: "give me a TDX quote for these 64 bytes".

The kernel ABI (Documentation/ABI/testing/configfs-tsm-report): mkdir an entry under
``/sys/kernel/config/tsm/report``; ``provider`` names the quoting backend
(``tdx_guest``); writing ``inblob`` (REPORTDATA) bumps ``generation``; reading
``outblob`` returns the quote for the current inblob. Another writer to the same entry
would also bump ``generation``, so the client checks that it advanced by exactly one
across its own write and retries otherwise.

File operations go through a FileOps (os-shaped names) so tests can hand in a
simulator's directory fake.
"""

from __future__ import annotations

import errno
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol

from tdx_boot_attest.agent.errors import LocalReason, TsmError
from tdx_boot_attest.agent.protocol import REPORT_DATA_BYTES
from tdx_boot_attest.agent.quote import parse_quote

TDX_PROVIDER: Final = "tdx_guest"
ENTRY_PREFIX: Final = "tdx-boot-attest-"
DEFAULT_ATTEMPTS: Final = 5


class FileOps(Protocol):
    """The file operations the client needs, named like os / pathlib."""

    def mkdir(self, path: str) -> None:
        """Create the directory ``path``; raises OSError (FileExistsError if it exists)."""

    def rmdir(self, path: str) -> None:
        """Remove the directory ``path``; raises OSError."""

    def read_bytes(self, path: str) -> bytes:
        """Open ``path``, read to EOF, close; raises OSError."""

    def write_bytes(self, path: str, data: bytes) -> int:
        """Open ``path``, write ``data`` in one call, close; return the count. Raises OSError."""


class OsFileOps:
    """FileOps over the real file system (configfs, or the simulator's FUSE mount)."""

    def mkdir(self, path: str) -> None:
        """os.mkdir; raises OSError."""
        os.mkdir(path)

    def rmdir(self, path: str) -> None:
        """os.rmdir; raises OSError."""
        os.rmdir(path)

    def read_bytes(self, path: str) -> bytes:
        """Read ``path`` to EOF; raises OSError."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def write_bytes(self, path: str, data: bytes) -> int:
        """Write ``data`` with one write(2); the close commits it. Raises OSError."""
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            written = os.write(fd, data)
        except BaseException:
            os.close(fd)
            raise
        # configfs binary attributes commit on release, so a close error is a write error.
        os.close(fd)
        return written


class QuoteProvider(Protocol):
    """Anything that returns a TDX quote binding 64 bytes of REPORTDATA."""

    def get_quote(self, report_data: bytes) -> bytes:
        """Return a quote over ``report_data``; raises TsmError."""


class _Retry(Exception):
    def __init__(self, error: TsmError) -> None:
        super().__init__(error.message)
        self.error = error


_ERRNO_REASONS: Final = {
    errno.ENXIO: (
        LocalReason.TSM_UNAVAILABLE,
        "no configfs-tsm provider (ENXIO): this is not a TD, or the tdx_guest module is not loaded",
    ),
    errno.EINVAL: (LocalReason.TSM_INVALID, "the TDX module refused the request (EINVAL)"),
    errno.EIO: (LocalReason.TSM_IO_ERROR, "quote generation failed (EIO)"),
    errno.ETIMEDOUT: (
        LocalReason.TSM_TIMEOUT,
        "quote generation timed out (ETIMEDOUT): the host's quoting service did not answer",
    ),
    errno.EBUSY: (LocalReason.TSM_BUSY, "configfs-tsm stayed busy (EBUSY)"),
}


def _os_error(exc: OSError, what: str) -> TsmError:
    reason, text = _ERRNO_REASONS.get(
        exc.errno or 0, (LocalReason.TSM_ERROR, f"{exc.strerror or exc} (errno {exc.errno})")
    )
    return TsmError(reason, f"{text}; while {what}")


class TsmQuoteProvider:
    """QuoteProvider over a configfs-tsm report directory (``root``)."""

    def __init__(
        self,
        root: Path,
        files: FileOps | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff: float = 0.05,
    ) -> None:
        self.root = root
        self.files: FileOps = files if files is not None else OsFileOps()
        self.sleep = sleep
        self.attempts = attempts
        self.backoff = backoff

    def get_quote(self, report_data: bytes) -> bytes:
        """Return a TDX quote over exactly 64 bytes of ``report_data``.

        Retries a generation race or EBUSY up to ``attempts`` times. Raises TsmError
        with reason tsm_unavailable (no report directory, ENXIO), tsm_provider_unsupported,
        tsm_invalid (EINVAL), tsm_io_error (EIO), tsm_timeout (ETIMEDOUT), tsm_busy,
        tsm_generation_race or tsm_error; ValueError when ``report_data`` is not 64 bytes.
        """
        if len(report_data) != REPORT_DATA_BYTES:
            raise ValueError(f"REPORTDATA must be {REPORT_DATA_BYTES} bytes")
        last = TsmError(LocalReason.TSM_ERROR, "no attempt was made")
        for attempt in range(self.attempts):
            if attempt:
                self.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                return self._attempt(report_data)
            except _Retry as retry:
                last = retry.error
        raise TsmError(last.reason, f"{last.message} ({self.attempts} attempts)")

    def check_provider(self) -> str:
        """Make and remove one entry and return its provider; raises TsmError like get_quote."""
        try:
            entry = self._make_entry()
            try:
                return self._provider(entry)
            finally:
                self._remove(entry)
        except _Retry as retry:
            raise retry.error from None

    def _attempt(self, report_data: bytes) -> bytes:
        entry = self._make_entry()
        try:
            self._provider(entry)
            before = self._generation(entry)
            try:
                written = self.files.write_bytes(os.path.join(entry, "inblob"), report_data)
            except OSError as exc:
                raise self._classify(exc, "writing inblob") from None
            if written != len(report_data):
                raise TsmError(
                    LocalReason.TSM_ERROR, f"short write to inblob: {written} of 64 bytes"
                )
            try:
                quote = self.files.read_bytes(os.path.join(entry, "outblob"))
            except OSError as exc:
                raise self._classify(exc, "reading outblob") from None
            after = self._generation(entry)
            if after != before + 1:
                raise _Retry(
                    TsmError(
                        LocalReason.TSM_GENERATION_RACE,
                        f"generation went from {before} to {after} across one write: "
                        "another writer used the entry",
                    )
                )
            if parse_quote(quote).report_data != report_data:
                raise _Retry(
                    TsmError(
                        LocalReason.TSM_GENERATION_RACE,
                        "the quote in outblob carries another REPORTDATA than the one written",
                    )
                )
            return quote
        finally:
            self._remove(entry)

    def _classify(self, exc: OSError, what: str) -> Exception:
        error = _os_error(exc, what)
        if exc.errno == errno.EBUSY:
            return _Retry(error)
        return error

    def _make_entry(self) -> str:
        try:
            for _ in range(8):
                path = os.path.join(self.root, ENTRY_PREFIX + secrets.token_hex(8))
                try:
                    self.files.mkdir(path)
                except FileExistsError:
                    continue
                return path
            raise OSError(errno.EEXIST, "no unique entry name after 8 tries")
        except FileNotFoundError:
            raise TsmError(
                LocalReason.TSM_UNAVAILABLE,
                f"configfs-tsm report directory {self.root} does not exist "
                "(configfs not mounted, or the kernel has no TSM report support)",
            ) from None
        except OSError as exc:
            raise self._classify(exc, f"creating an entry in {self.root}") from None

    def _provider(self, entry: str) -> str:
        try:
            raw = self.files.read_bytes(os.path.join(entry, "provider"))
        except OSError as exc:
            raise self._classify(exc, "reading provider") from None
        provider = raw.decode("ascii", "replace").strip()
        if provider != TDX_PROVIDER:
            raise TsmError(
                LocalReason.TSM_PROVIDER_UNSUPPORTED,
                f"configfs-tsm provider is {provider!r}, expected {TDX_PROVIDER!r}",
            )
        return provider

    def _generation(self, entry: str) -> int:
        try:
            raw = self.files.read_bytes(os.path.join(entry, "generation"))
        except OSError as exc:
            raise self._classify(exc, "reading generation") from None
        try:
            return int(raw.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise TsmError(
                LocalReason.TSM_ERROR, f"generation is not a number: {raw[:32]!r}"
            ) from None

    def _remove(self, entry: str) -> None:
        try:
            self.files.rmdir(entry)
        except FileNotFoundError:
            pass
        except OSError as exc:
            # A leftover entry wastes a little kernel memory; it must not hide the result.
            import sys

            print(f"tdx-boot-agent: could not remove {entry}: {exc}", file=sys.stderr)
