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
    workdir = re.search(r"\(cleaned up (\S+)\)", out)
    assert workdir is not None
    assert not Path(workdir.group(1)).exists()
