"""Run `tdxsim pcs` as its own process for tests (the collateral service a server fetches from)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class PcsProcess:
    """A running `tdxsim pcs`: its base URL and process."""

    url: str
    process: subprocess.Popen[str]

    def stop(self) -> None:
        """SIGTERM, then wait (kill if it does not end). Raises nothing."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@contextmanager
def pcs_process(state_dir: Path, *flags: str) -> Iterator[PcsProcess]:
    """`tdxsim pcs --state STATE_DIR --listen 127.0.0.1:0 FLAGS...`, until the block ends."""
    command: Sequence[str] = [
        sys.executable,
        "-m",
        "tdxsim",
        "pcs",
        "--state",
        str(state_dir),
        "--listen",
        "127.0.0.1:0",
        *flags,
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    running = PcsProcess("", process)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("tdxsim pcs listening on "):
            raise RuntimeError(f"tdxsim pcs did not start: {line!r}")
        running.url = line.split()[-1]
        yield running
    finally:
        running.stop()
