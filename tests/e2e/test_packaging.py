"""The wheel, installed with exactly each documented extra in a clean venv, runs its commands.

One wheel is built per module; each venv (no extras, ``[server]``, ``[sim]``, ``[runtime]``)
is made once and shared by the tests that need it. pip's own cache is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.miner_keys import MinerKey

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
COMMANDS = ("tdx-boot-agent", "tdx-attest-server", "tdxsim")
# Every module of the verifier must import from the [server] extra alone (migrations/env.py
# runs Alembic's context at import time, so only its package is imported).
IMPORT_ALL_SERVER = """
import importlib, pkgutil
import tdx_boot_attest.server as server
for info in pkgutil.walk_packages(server.__path__, "tdx_boot_attest.server."):
    if not info.name.startswith("tdx_boot_attest.server.migrations."):
        importlib.import_module(info.name)
print("imported")
"""


def tracked_source(destination: Path) -> Path:
    """A copy of the files git tracks: a build in the working tree would reuse whatever
    an earlier build left in build/, and the wheel could carry modules since deleted."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True, timeout=60
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    return destination


def _run(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = tracked_source(tmp_path_factory.mktemp("source"))
    result = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(source)])
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("tdx_boot_attest-*.whl")
    return built


@pytest.fixture(scope="module")
def venv_with(
    wheel: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], Path]]:
    """Return the bin directory of a venv holding the wheel with one extra ('' for none)."""
    made: dict[str, Path] = {}

    def make(extra: str) -> Path:
        if extra not in made:
            root = tmp_path_factory.mktemp(f"venv-{extra or 'none'}")
            result = _run([sys.executable, "-m", "venv", str(root)])
            assert result.returncode == 0, result.stderr
            requirement = f"{wheel}[{extra}]" if extra else str(wheel)
            result = _run([str(root / "bin" / "python"), "-m", "pip", "install", requirement])
            assert result.returncode == 0, result.stdout + result.stderr
            made[extra] = root / "bin"
        return made[extra]

    yield make


def test_wheel_carries_the_licence_and_the_simulator_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    licence = [name for name in names if name.endswith(".dist-info/licenses/LICENSE")]
    assert licence, names
    text = zipfile.ZipFile(wheel).read(licence[0]).decode()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "tdx_boot_attest/tdxsim/profiles/default.json" in names
    assert "tdx_boot_attest/tdxsim/platforms/qemu-tdvf.json" in names
    assert "tdx_boot_attest/server/migrations/script.py.mako" in names


def test_building_the_wheel_gives_no_setuptools_warning(tmp_path: Path) -> None:
    source = tracked_source(tmp_path / "source")
    result = _run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path), str(source)]
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "would be ignored" not in output
    assert "SetuptoolsDeprecationWarning" not in output
    assert "BuildBackendWarning" not in output


@pytest.mark.parametrize("extra", ["", "server", "sim", "runtime"])
def test_every_command_prints_its_version(venv_with: Callable[[str], Path], extra: str) -> None:
    bin_dir = venv_with(extra)
    for command in COMMANDS:
        result = _run([str(bin_dir / command), "--version"])
        assert result.returncode == 0, (command, result.stderr)
        assert result.stdout.startswith(f"{command} 0.1.0 "), result.stdout


def test_without_extras_the_server_and_simulator_name_their_extra(
    venv_with: Callable[[str], Path],
) -> None:
    bin_dir = venv_with("")
    for command, extra in (("tdx-attest-server", "server"), ("tdxsim", "sim")):
        for args in (["--help"], ["migrate"]):
            result = _run([str(bin_dir / command), *args])
            assert result.returncode == 1, (command, result)
            assert f"pip install 'tdx-boot-attest[{extra}]'" in result.stderr
            assert "Traceback" not in result.stderr


@pytest.mark.parametrize("extra", ["", "server", "sim", "runtime"])
def test_the_agent_checks_a_configuration(
    venv_with: Callable[[str], Path], extra: str, tmp_path: Path
) -> None:
    bin_dir = venv_with(extra)
    assert _run([str(bin_dir / "tdx-boot-agent"), "check", "--help"]).returncode == 0
    config = tmp_path / "agent.conf"
    config.write_text("[server]\nurl = http://127.0.0.1:9\nallow_http = true\n")
    result = _run(
        [str(bin_dir / "tdx-boot-agent"), "check", "--config", str(config), "--cmdline", os.devnull]
    )
    # Not a TD and no server: the check fails (3), but only after reading the configuration.
    assert "ok     config: server http://127.0.0.1:9" in result.stdout, result
    assert "Traceback" not in result.stderr


def test_the_server_extra_runs_the_verifier(
    venv_with: Callable[[str], Path], tmp_path: Path
) -> None:
    bin_dir = venv_with("server")
    help_result = _run([str(bin_dir / "tdx-attest-server"), "--help"])
    assert help_result.returncode == 0 and "serve" in help_result.stdout
    key = tmp_path / "master.key"
    result = _run([str(bin_dir / "tdx-attest-server"), "master-key", "generate", str(key)])
    assert result.returncode == 0, result.stderr
    assert key.stat().st_mode & 0o777 == 0o600
    env = {**os.environ, "TDX_ATTEST_DATABASE_URL": f"sqlite:///{tmp_path / 'server.db'}"}
    result = _run([str(bin_dir / "tdx-attest-server"), "migrate"], env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "server.db").stat().st_size > 0
    result = _run([str(bin_dir / "python"), "-c", IMPORT_ALL_SERVER])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"


def test_the_sim_extra_runs_the_simulator(venv_with: Callable[[str], Path], tmp_path: Path) -> None:
    tdxsim = str(venv_with("sim") / "tdxsim")
    help_result = _run([tdxsim, "--help"])
    assert help_result.returncode == 0 and "mount" in help_result.stdout
    assert "unavailable" not in help_result.stdout
    state = tmp_path / "state"
    assert _run([tdxsim, "init", str(state)]).returncode == 0
    quote = tmp_path / "td.quote"
    result = _run(
        [tdxsim, "quote", "--state", str(state), "--report-data", "ab" * 64, "--out", str(quote)]
    )
    assert result.returncode == 0, result.stderr
    inspected = _run([tdxsim, "inspect", str(quote)])
    assert inspected.returncode == 0, inspected.stderr
    assert "ab" * 64 in inspected.stdout


SIGN_WITH_HOTKEY = """
import sys
from pathlib import Path
from tdx_boot_attest.agent.auth import HotkeySigner
from tdx_boot_attest.agent.auth import HotkeyError
try:
    signer = HotkeySigner.from_file(Path(sys.argv[1]))
except HotkeyError as exc:
    sys.exit(f"{exc.reason}: {exc.message}")
print(sorted(signer.headers("POST", "/servers/x/attest", b"{}")))
"""


@pytest.mark.parametrize(("extra", "signs"), [("runtime", True), ("", False)])
def test_only_the_runtime_extra_signs_runtime_requests(
    venv_with: Callable[[str], Path], tmp_path: Path, extra: str, signs: bool
) -> None:
    seed = hashlib.sha256(b"packaging").digest()
    key = MinerKey.from_seed(seed)
    hotkey = tmp_path / "hotkey.json"
    hotkey.write_text(json.dumps({"ss58Address": key.hotkey, "secretSeed": "0x" + seed.hex()}))
    bin_dir = venv_with(extra)
    assert _run([str(bin_dir / "tdx-boot-agent"), "runtime", "--help"]).returncode == 0
    result = _run([str(bin_dir / "python"), "-c", SIGN_WITH_HOTKEY, str(hotkey)])
    if signs:
        assert result.returncode == 0, result.stderr
        assert "X-Chutes-Signature" in result.stdout
    else:
        assert "pip install 'tdx-boot-attest[runtime]'" in result.stderr
        assert "Traceback" not in result.stderr
