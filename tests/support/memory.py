"""Directories on a memory file system, where the agent agrees to keep its identity key.

The agent refuses to keep the per-boot identity key anywhere but tmpfs or ramfs (in a VM,
/run). On a test machine /run may be on disk, so tests use a private directory under
/dev/shm, checked with the agent's own rule, and removed afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tdx_boot_attest.agent.identity import IdentityUnavailable, check_in_memory

SHM = Path("/dev/shm")


@contextmanager
def memory_directory(prefix: str = "tdx-identity-") -> Iterator[Path]:
    """A fresh directory (mode 0700) on tmpfs; skips the test when there is none."""
    try:
        check_in_memory(SHM)
    except IdentityUnavailable as exc:
        pytest.skip(f"no tmpfs at {SHM} for the agent's identity key: {exc.message}")
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=SHM))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
