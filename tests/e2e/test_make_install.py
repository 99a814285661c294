"""``make install DESTDIR=...``: the agent alone, reproducible, with its runtime extra.

Two staged installs must be byte-identical (the initramfs built from them is measured);
the staged agent must run (``runtime`` included, which needs sr25519) against a live
verifier, and the staged tree must hold no pip, verifier or simulator code.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tdx_boot_attest.agent.identity import load_or_create_identity
from tdx_boot_attest.tdxsim.state import SimState
from tests.support.agent_e2e import write_agent_config
from tests.support.live_server import simulator_server
from tests.support.memory import memory_directory
from tests.support.miner_keys import MinerKey

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
IMAGE_PYTHON = Path("/usr/bin/python3")
DEFAULT_PREFIX = "opt/tdx-boot-attest"
# The agent's runtime signer; a key no miner registered, so the verifier refuses it.
SEED = hashlib.sha256(b"make-install-e2e").digest()


def make_install(destdir: Path, *variables: str) -> subprocess.CompletedProcess[str]:
    if not IMAGE_PYTHON.exists():
        pytest.skip(f"{IMAGE_PYTHON} (the image interpreter make install uses) is absent")
    result = subprocess.run(
        ["make", "-C", str(REPO), "install", f"DESTDIR={destdir}", f"PYTHON={sys.executable}",
         *variables],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def tree_digest(root: Path) -> dict[str, str]:
    """Path -> kind, mode and content digest (or link target) of every entry under root."""
    entries: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            entries[name] = f"link {os.readlink(path)}"
        elif stat.S_ISDIR(info.st_mode):
            entries[name] = f"dir {stat.S_IMODE(info.st_mode):o}"
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            entries[name] = f"file {stat.S_IMODE(info.st_mode):o} {digest}"
    return entries


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("install")
    make_install(root / "a")
    return root / "a"


def test_two_installs_are_identical(staged: Path, tmp_path: Path) -> None:
    make_install(tmp_path / "b")
    first, second = tree_digest(staged), tree_digest(tmp_path / "b")
    differing = sorted(name for name in first.keys() | second.keys()
                       if first.get(name) != second.get(name))  # fmt: skip
    assert differing == []
    assert any(name.endswith(".pyc") for name in first)


def test_the_staged_venv_holds_the_agent_alone(staged: Path) -> None:
    venv = staged / DEFAULT_PREFIX
    site = next(venv.glob("lib/python3*/site-packages"))
    assert sorted(path.name for path in (site / "tdx_boot_attest").iterdir()) == ["agent"]
    names = {path.name.lower() for path in site.iterdir()}
    assert not {name for name in names if name.startswith(("pip", "setuptools", "_distutils"))}
    assert "sr25519" in names
    commands = sorted(path.name for path in (venv / "bin").iterdir()
                      if not path.name.startswith(("python", "activate", "Activate")))  # fmt: skip
    assert commands == ["tdx-boot-agent"]
    staged_text = "\n".join(
        path.read_text(errors="replace") for path in venv.rglob("*")
        if path.is_file() and path.suffix not in {".so", ".pyc"}
    )  # fmt: skip
    assert str(staged) not in staged_text, "a staged path leaked into the installed files"


def run_staged_agent(staged: Path, *args: str) -> subprocess.CompletedProcess[str]:
    venv = staged / DEFAULT_PREFIX
    # Through the staged interpreter: the script's #! names the final /opt path.
    return subprocess.run(
        [str(venv / "bin" / "python"), str(venv / "bin" / "tdx-boot-agent"), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_staged_agent_attempts_a_runtime_attestation(staged: Path, tmp_path: Path) -> None:
    result = run_staged_agent(staged, "runtime", "--help")
    assert result.returncode == 0, result.stderr
    assert "--hotkey-file" in result.stdout
    state_dir = tmp_path / "sim"
    SimState.init(state_dir, seed=3)
    miner = MinerKey.from_seed(SEED)
    hotkey = tmp_path / "hotkey.json"
    hotkey.write_text(json.dumps({"secretSeed": "0x" + SEED.hex(), "ss58Address": miner.hotkey}))
    (tmp_path / "cmdline").write_text("quiet\n")
    with simulator_server(tmp_path, state_dir) as server, memory_directory() as run_dir:
        identity_path = run_dir / "tdx-boot-attest" / "identity.key"
        load_or_create_identity(identity_path)
        config = write_agent_config(
            tmp_path / "agent.conf",
            url=server.base_url,
            tsm_root=tmp_path / "no-tsm",
            identity_path=identity_path,
        )
        result = run_staged_agent(
            staged, "runtime", "--config", str(config), "--cmdline", str(tmp_path / "cmdline"),
            "--kmsg", str(tmp_path / "kmsg"), "--server-id", "node-1",
            "--hotkey-file", str(hotkey),
        )  # fmt: skip
    # The request was signed with sr25519 and sent: the verifier knows no such miner.
    assert "Traceback" not in result.stderr
    assert "FAILED reason=unauthenticated" in result.stderr, result.stderr
    assert result.returncode == 5


def test_agent_prefix_is_named_by_every_installed_file(tmp_path: Path) -> None:
    make_install(tmp_path, "AGENT_PREFIX=/opt/elsewhere")
    assert (
        (tmp_path / "opt/elsewhere/bin/tdx-boot-agent")
        .read_text()
        .startswith("#!/opt/elsewhere/bin/python\n")
    )
    assert not (tmp_path / DEFAULT_PREFIX).exists()
    naming_default = [
        str(path.relative_to(tmp_path))
        for path in tmp_path.rglob("*")
        # The copied guide describes the default itself; everything that runs names the prefix.
        if path.is_file()
        and "share/doc" not in str(path)
        and "/opt/tdx-boot-attest" in path.read_text(errors="replace")
    ]
    assert naming_default == []
    for installed in (
        "usr/lib/systemd/system/tdx-boot-attest.service",
        "usr/lib/systemd/system/tdx-attest-runtime.service",
        "usr/share/initramfs-tools/hooks/tdx-boot-attest",
        "usr/share/initramfs-tools/scripts/local-top/tdx-boot-attest",
        "usr/lib/dracut/modules.d/90tdx-boot-attest/module-setup.sh",
        "opt/elsewhere/libexec/keyscript",
    ):
        assert "/opt/elsewhere" in (tmp_path / installed).read_text(), installed
