"""Session-wide pieces of the QEMU boot tests: kernel, staged install, simulator, server, disk."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tdxsim.profile import Profile
from tdxsim.state import SimState
from tests.support.live_server import LiveServer, simulator_server
from tests.vm import images, qemu

# Generous: a boot under software emulation on a loaded 2-core machine takes about a minute.
BOOT_TIMEOUT = 420.0

FIGURES_FILE = images.REPO_ROOT / "build" / "vm" / "figures.json"
PROFILES_DIR = images.REPO_ROOT / "tdxsim" / "profiles"


@dataclass
class VmWorld:
    """Everything a boot needs, shared by the module's tests."""

    root: Path
    kernel: images.Kernel
    venv: Path
    state_dir: Path
    sim_lib: Path
    server: LiveServer
    disk: Path
    marker: str
    volume_uuid: str
    agent_conf: Path
    figures: dict[str, object] = field(default_factory=dict)

    def build_env(self) -> dict[str, str]:
        """Build-time overrides for our hook and the simulator's test hook."""
        return images.build_env(
            {
                "TDX_BOOT_ATTEST_PREFIX": str(self.venv),
                "TDX_BOOT_ATTEST_CONFIG": str(self.agent_conf),
                "TDXSIM_TEST_LIB": str(self.sim_lib),
                "TDXSIM_TEST_STATE": str(self.state_dir),
            }
        )

    def boot(self, initrd: Path, cmdline: str, profile: str, name: str) -> qemu.BootResult:
        """Boot ``initrd`` with the simulator playing ``profile``; console in ``root/name``."""
        return qemu.boot(
            kernel=self.kernel.vmlinuz,
            initrd=initrd,
            disk=self.disk,
            append=f"{cmdline} tdxsim.profile={profile}",
            console=self.root / f"{name}.console",
            timeout=BOOT_TIMEOUT,
        )


def guest_url(server: LiveServer) -> str:
    """The server's URL as the guest sees it: QEMU's user network maps 10.0.2.2 to host."""
    port = server.base_url.rsplit(":", 1)[1]
    return f"http://10.0.2.2:{port}"


@pytest.fixture(scope="session")
def vm_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmWorld]:
    missing = images.missing_tools()
    if missing:
        pytest.skip(
            f"VM tools missing ({', '.join(missing)}): run scripts/install-system-deps.sh vm"
        )
    root = tmp_path_factory.mktemp("vm")
    kernel = images.find_kernel()
    venv = images.stage_install(root / "stage")
    state_dir = root / "sim"
    state = SimState.init(state_dir, seed=7)
    golden = root / "golden.quote"
    golden.write_bytes(state.make_quote(bytes(64), Profile.load(PROFILES_DIR / "default.json")))
    sim_lib = images.stage_simulator(root / "simlib")
    passphrase = b"tdx-vm-test-" + secrets.token_hex(16).encode()
    volume_uuid = str(uuid.uuid4())
    marker = secrets.token_hex(16)
    disk = root / "root.img"
    images.make_luks_disk(disk, passphrase=passphrase, marker=marker, uuid=volume_uuid)
    with simulator_server(root, state_dir) as server:
        server.add_image("vm-golden", passphrase=passphrase, quote_file=golden)
        del passphrase
        agent_conf = images.write_agent_config(
            root / "agent.conf", url=guest_url(server), uuid=volume_uuid
        )
        world = VmWorld(
            root, kernel, venv, state_dir, sim_lib, server, disk, marker, volume_uuid, agent_conf
        )
        yield world
        FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
        previous = json.loads(FIGURES_FILE.read_text()) if FIGURES_FILE.exists() else {}
        previous.update(world.figures)
        FIGURES_FILE.write_text(json.dumps(previous, indent=2, sort_keys=True) + "\n")
