"""Argument handling of ``tdxsim mount`` (no mount is made here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tdx_boot_attest.tdxsim.cli import main
from tdx_boot_attest.tdxsim.state import SimState


def test_a_bad_fault_flag_is_a_usage_error(
    shared_state: SimState, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(
            ["mount", "--state", str(shared_state.path), "--fault", "outblob=EWHAT", str(tmp_path)]
        )
    assert exited.value.code == 2
    assert "bad fault spec 'outblob=EWHAT'" in capsys.readouterr().err


def test_a_missing_mountpoint_is_refused_with_a_reason(
    shared_state: SimState, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["mount", "--state", str(shared_state.path), str(tmp_path / "absent")]) == 1
    assert "tdxsim: error: tsm_enotdir:" in capsys.readouterr().err


def test_a_bad_listen_address_is_a_usage_error(
    shared_state: SimState, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["pcs", "--state", str(shared_state.path), "--listen", "nowhere"])
    assert exited.value.code == 2
    assert "expected HOST:PORT" in capsys.readouterr().err
