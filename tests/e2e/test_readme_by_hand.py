"""README.md's "One boot attestation by hand" block, run as it is written."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"
NEEDED = ("cryptsetup", "fusermount3", "curl")


def _block() -> str:
    text = README.read_text(encoding="utf-8")
    inside = text.split("<!-- by-hand:begin -->", 1)[1].split("<!-- by-hand:end -->", 1)[0]
    body = inside.strip()
    assert body.startswith("```sh\n") and body.endswith("\n```")
    return body[len("```sh\n") : -len("\n```")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Stops what the block left running (the verifier, the FUSE mount) however it ended.
CLEANUP = """
cleanup() {
    fusermount3 -u -z tsm 2>/dev/null || true
    kill $(jobs -p) 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf /dev/shm/tdx-by-hand-$$
}
trap cleanup EXIT
set -e
"""


def test_the_readme_boot_by_hand_unlocks_the_volume(tmp_path: Path) -> None:
    missing = [tool for tool in NEEDED if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (scripts/install-system-deps.sh)")
    if not Path("/dev/fuse").exists():
        pytest.skip("no /dev/fuse: the simulated configfs-tsm device needs FUSE")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TDX_ATTEST_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    env["PORT"] = str(_free_port())
    result = subprocess.run(
        ["bash", "-c", CLEANUP + _block()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert 'tdx-boot-attest: OK unlocked volume="root"' in output
    # The passphrase never shows, and the verifier recorded an accepted attempt.
    assert (tmp_path / "luks.pass").read_text().strip() not in output
    with sqlite3.connect(tmp_path / "verifier.db") as db:
        verdicts = db.execute("SELECT verdict, image_name FROM boot_attestations").fetchall()
    assert verdicts == [("accepted", "golden")]
