"""The systemd units: valid for systemd itself, and ordered as the initrd needs."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.vm.images import REPO_ROOT

UNITS_DIR = REPO_ROOT / "systemd"
UNITS = ("tdx-boot-attest.service", "tdx-attest-runtime.service", "tdx-attest-runtime.timer")
AGENT = "/opt/tdx-boot-attest/bin/tdx-boot-agent"


def read_unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS_DIR / name)
    return parser


def test_systemd_analyze_accepts_the_units(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze missing: run scripts/install-system-deps.sh vm")
    # The agent is not installed on the test machine: point ExecStart at a real binary.
    for name in UNITS:
        text = (UNITS_DIR / name).read_text().replace(AGENT, "/bin/true")
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(tmp_path / n) for n in UNITS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_initrd_unit_runs_the_agent_before_any_cryptsetup_unit() -> None:
    unit = read_unit("tdx-boot-attest.service")
    assert unit["Unit"]["DefaultDependencies"] == "no"
    assert "cryptsetup-pre.target" in unit["Unit"]["Before"].split()
    assert "cryptsetup-pre.target" in unit["Unit"]["Wants"].split()
    assert "network-online.target" in unit["Unit"]["After"].split()
    assert "network-online.target" in unit["Unit"]["Wants"].split()
    assert unit["Unit"]["Conflicts"] == "shutdown.target"
    assert unit["Unit"]["ConditionPathExists"] == "/etc/initrd-release"
    assert unit["Service"]["Type"] == "oneshot"
    assert unit["Service"]["ExecStart"] == f"{AGENT} boot"
    assert unit["Install"]["WantedBy"] == "initrd.target"


def test_runtime_timer_drives_the_runtime_service() -> None:
    service = read_unit("tdx-attest-runtime.service")
    timer = read_unit("tdx-attest-runtime.timer")
    assert service["Service"]["ExecStart"].startswith(f"{AGENT} runtime --server-id ")
    assert "--hotkey-file /etc/tdx-boot-attest/hotkey.json" in service["Service"]["ExecStart"]
    assert timer["Install"]["WantedBy"] == "timers.target"
    assert timer["Timer"]["OnUnitActiveSec"]


def test_runtime_service_reads_the_boots_identity_key_and_cannot_change_it() -> None:
    service = read_unit("tdx-attest-runtime.service")["Service"]
    # The key lives in /run (a tmpfs the initrd carries over): the service must see the
    # real /run, read-only, and must not pass the key (or its path's contents) along.
    assert service["ProtectSystem"] == "strict"
    writable = service.get("ReadWritePaths", "").split()
    assert not any(p.lstrip("-").startswith("/run") for p in writable)
    for hiding in ("TemporaryFileSystem", "InaccessiblePaths", "PrivateMounts"):
        assert "/run" not in service.get(hiding, ""), f"{hiding} hides /run"
    assert "identity" not in service["ExecStart"]
    assert "Environment" not in service
