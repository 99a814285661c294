"""Console reporting: one greppable line per outcome, on /dev/kmsg and stderr.

``tdx-boot-attest: FAILED reason=measurement_mismatch message="rtmr1 differs ..."``
goes to the kernel log (so it shows on the VM console even from an initramfs) and to
stderr. Messages never contain key material: callers pass reasons and server messages.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Final, TextIO

TAG: Final = "tdx-boot-attest"
DEFAULT_KMSG: Final = Path("/dev/kmsg")
# Syslog priorities as /dev/kmsg expects them in a "<N>" prefix.
_KMSG_ERR: Final = 3
_KMSG_INFO: Final = 6
_MAX_MESSAGE: Final = 900


def quote_message(message: str) -> str:
    """The message as a double-quoted, single-line value. Raises nothing."""
    flat = " ".join(message.split())
    if len(flat) > _MAX_MESSAGE:
        flat = flat[: _MAX_MESSAGE - 3] + "..."
    return '"' + flat.replace("\\", "\\\\").replace('"', '\\"') + '"'


def failure_line(reason: str, message: str) -> str:
    """``tdx-boot-attest: FAILED reason=R message="..."``. Raises nothing."""
    return f"{TAG}: FAILED reason={reason} message={quote_message(message)}"


class Console:
    """Writes outcome lines to ``kmsg`` (when it exists) and to ``stream`` (default stderr)."""

    def __init__(self, kmsg: Path | None = DEFAULT_KMSG, stream: TextIO | None = None) -> None:
        self.kmsg = kmsg
        self.stream = stream if stream is not None else sys.stderr

    def failure(self, reason: str, message: str) -> None:
        """Report a failure. Raises nothing: reporting must not mask the failure."""
        self._emit(failure_line(reason, message), _KMSG_ERR)

    def success(self, what: str, **details: str) -> None:
        """Report success, e.g. ``tdx-boot-attest: OK unlocked volume=root image=x``."""
        extra = "".join(f" {key}={quote_message(value)}" for key, value in details.items())
        self._emit(f"{TAG}: OK {what}{extra}", _KMSG_INFO)

    def info(self, message: str) -> None:
        """A progress note on stderr only (the kernel log keeps outcomes)."""
        self._write_stream(f"{TAG}: {message}")

    def _emit(self, line: str, priority: int) -> None:
        self._write_stream(line)
        if self.kmsg is None:
            return
        try:
            fd = os.open(self.kmsg, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError:
            return
        try:
            os.write(fd, f"<{priority}>{line}\n".encode())
        except OSError:
            pass
        finally:
            os.close(fd)

    def _write_stream(self, line: str) -> None:
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass
