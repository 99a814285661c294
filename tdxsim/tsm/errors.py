"""The one error type of the simulated configfs-tsm device: an errno, as the kernel returns it."""

from __future__ import annotations

import errno
import os

from tdx_boot_attest.tdxsim.errors import TdxSimError


class TsmError(TdxSimError, OSError):
    """A configfs-tsm operation failed with ``errno``, exactly as the kernel would fail it.

    It is an OSError so that front ends (the FUSE mount, the directory fake) hand the errno
    to callers unchanged; ``reason`` is ``tsm_`` and the errno name (``"tsm_enxio"``).
    """

    def __init__(self, err: int, message: str) -> None:
        OSError.__init__(self, err, f"{os.strerror(err)} ({message})")
        self.message = message
        self.reason = "tsm_" + errno.errorcode.get(err, str(err)).lower()


def errno_from_name(name: str) -> int:
    """Map ``"EIO"``/``"eio"``/``"5"`` to the errno number; raises ValueError for unknown names."""
    text = name.strip()
    if text.isdigit():
        number = int(text)
        if number in errno.errorcode:
            return number
        raise ValueError(f"unknown errno number {number}")
    value = getattr(errno, text.upper(), None)
    if not isinstance(value, int) or not text.upper().startswith("E"):
        raise ValueError(f"unknown errno name {name!r}")
    return value
