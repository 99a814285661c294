"""The approved images boots are matched against, kept per process, confirmed at release.

Reading the images on every boot cost the database as much as recording the attempt. A
process keeps the list it read for KEEP_SECONDS and matches boots against it, and an
image added, retired or re-keyed still counts from the very next boot:

- a key is released only if the statement that spends the nonce and records the attempt
  finds the matched image still active with the same sealed passphrase
  (server.boot.store); otherwise nothing is written and the attempt is verified again
  against a fresh read;
- a boot the kept list refuses (no image matches) is matched again against a fresh read
  before it is refused, so a newly added image is never refused from a stale copy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from tdx_boot_attest.server.policy import ApprovedImage

# How long a read list serves boots before the next boot reads it again.
KEEP_SECONDS = 30.0


class ActiveImages:
    """A kept copy of the active images, read again when older than ``keep_seconds``.

    Thread-safe. ``load`` reads the images from the database (and raises its errors).
    """

    def __init__(
        self,
        load: Callable[[], list[ApprovedImage]],
        *,
        keep_seconds: float = KEEP_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._keep = keep_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._images: tuple[ApprovedImage, ...] | None = None
        self._read_at = 0.0

    def get(self) -> tuple[tuple[ApprovedImage, ...], bool]:
        """The images, and whether they were read from the database just now.

        Raises the database's errors when a read is due and fails.
        """
        with self._lock:
            images = self._images
            if images is not None and self._clock() - self._read_at < self._keep:
                return images, False
        return self.read(), True

    def read(self) -> tuple[ApprovedImage, ...]:
        """Read the images from the database now and keep them. Raises the database's errors."""
        started = self._clock()
        images = tuple(self._load())
        with self._lock:
            # A slower read that started earlier does not replace a newer one.
            if self._images is None or started >= self._read_at:
                self._images, self._read_at = images, started
        return images

    def forget(self) -> None:
        """Drop the kept copy: the next boot reads the images again. Raises nothing."""
        with self._lock:
            self._images = None
