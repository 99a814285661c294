"""Output into a pipe whose reader went away (``... --json | head -1``): every command
ends quietly with the status a Unix tool killed by SIGPIPE has (141), printing nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
EXIT_BROKEN_PIPE = 141


def _script(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed next to {sys.executable} (run make deps)")
    return str(path)


def _into_closed_pipe(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``argv`` with its standard output a pipe whose reader is closed at once."""
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    err = process.stderr.read()
    return process.wait(timeout=60), err


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TDX_ATTEST_")}
    clean["TDX_ATTEST_DATABASE_URL"] = f"sqlite:///{tmp_path}/server.db"
    return clean


@pytest.fixture
def quote_file(tmp_path: Path, env: dict[str, str]) -> Path:
    tdxsim = _script("tdxsim")
    state = tmp_path / "sim"
    subprocess.run([tdxsim, "init", str(state)], env=env, check=True, capture_output=True)
    out = tmp_path / "golden.quote"
    subprocess.run(
        [tdxsim, "quote", "--state", str(state), "--report-data", "00" * 64, "--out", str(out)],
        env=env,
        check=True,
        capture_output=True,
    )
    return out


def test_each_command_ends_quietly(tmp_path: Path, env: dict[str, str], quote_file: Path) -> None:
    server = _script("tdx-attest-server")
    subprocess.run([server, "migrate"], env=env, check=True, capture_output=True)
    commands = [
        [_script("tdx-boot-agent"), "quote", "--in", str(quote_file), "--json"],
        [_script("tdxsim"), "inspect", str(quote_file)],
        [server, "image", "list", "--json"],
    ]
    for argv in commands:
        status, err = _into_closed_pipe(argv, env)
        assert (status, err) == (EXIT_BROKEN_PIPE, ""), argv
    # argparse itself ignores a failed write of --help: quiet as well, with status 0.
    for name in ("tdx-boot-agent", "tdxsim", "tdx-attest-server"):
        status, err = _into_closed_pipe([_script(name), "--help"], env)
        assert status in (0, EXIT_BROKEN_PIPE), name
        assert err == "", name
