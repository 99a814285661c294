"""``make demo``'s script runs the whole story and cleans up after itself."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"


def test_demo_unlocks_the_golden_vm_and_refuses_the_other() -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=300, check=False
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "DEMO PASSED" in out
    assert 'tdx-boot-attest: OK unlocked volume="root"' in out
    assert "tdx-boot-attest: FAILED reason=measurement_mismatch" in out
    assert "rtmr1" in out
    assert "(demo) the VM would power off now" in out
    workdir = re.search(r"\(cleaned up (\S+)\)", out)
    assert workdir is not None
    assert not Path(workdir.group(1)).exists()
