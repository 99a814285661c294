"""``make demo``'s script runs the whole story and cleans up after itself."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"


def test_demo_unlocks_the_golden_vm_and_refuses_the_other_naming_the_kernel() -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=300, check=False
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "DEMO PASSED" in out
    assert 'tdx-boot-attest: OK unlocked volume="root"' in out
    # The image is approved from its measurement manifest alone, never from a quote.
    assert "image add golden --from-measurements" in out
    assert "--from-quote" not in out
    # The refused VM's console line names the component that differs: the kernel.
    refusals = [line for line in out.splitlines() if "tdx-boot-attest: FAILED" in line]
    assert refusals, out
    assert all("reason=measurement_mismatch" in line for line in refusals)
    assert all(
        "rtmr1 differs from image golden: boot application kernel (kernel)" in line
        and "everything else equal" in line
        for line in refusals
    ), refusals
    assert "(demo) the VM would power off now" in out
    workdir = re.search(r"\(cleaned up ([^;\s]+);", out)
    assert workdir is not None
    assert not Path(workdir.group(1)).exists()
    assert "run with --keep to keep it and its logs" in out
    _assert_replayable(out)


def _assert_replayable(out: str) -> None:
    """The commands are printed with the environment and agent.conf they need, and the
    output ends by saying where to read next."""
    for name in ("DATABASE_URL", "MASTER_KEY_FILE", "TRUST_ROOT", "PCCS_URL"):
        assert f"$ export TDX_ATTEST_{name}=" in out, name
    conf = out.split("agent.conf:\n", 1)[1]
    for line in ("[server]", "url = http://127.0.0.1:", "[tsm]", "[volume root]"):
        assert line in conf, line
    assert "$ " + "tdx-boot-agent" in out or "/tdx-boot-agent boot --config" in out
    assert out.rstrip().endswith("docs/protocol.md          the boot protocol byte by byte")
    assert "Read next:" in out


def test_demo_keep_keeps_the_working_directory_and_logs() -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO), "--keep"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    kept = re.search(r"\(kept (\S+): server\.log", out)
    assert kept is not None, out
    workdir = Path(kept.group(1))
    try:
        assert (workdir / "server.log").stat().st_size > 0
        assert (workdir / "agent.conf").is_file()
        assert (workdir / "verifier.db").is_file()
        assert "cleaned up" not in out
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(workdir)], check=False)
