"""Session-wide pieces of the QEMU boot tests: kernel, staged install, simulator, server, disk.

The guest's simulator does not make its measurements up. For every boot the host
computes, with tdxsim's measured boot (the measurement calculator), what TDVF would
measure when QEMU loads that kernel, initrd and command line into a TD of the VM's
memory size on the simulator's platform (``qemu-tdvf``), and hands the manifest to the
guest through QEMU's fw_cfg (file ``opt/tdxsim/manifest``), as firmware learns from fw_cfg
what QEMU loaded. The simulator in the guest quotes those registers and shows that
event log. Images are approved the image builder's way only: ``tdx-attest-server image
measure`` of the same files, then ``image add --from-measurements``; no golden quote.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pytest

from tdx_boot_attest.tdxsim.measured_boot import (
    DEFAULT_PLATFORM,
    BootSpec,
    Component,
    builtin_platform,
    simulate,
)
from tdx_boot_attest.tdxsim.state import SimState
from tests.support.live_server import LiveServer, simulator_server
from tests.vm import images, qemu

# Generous: a boot under software emulation on a loaded 2-core machine takes about a minute.
BOOT_TIMEOUT = 420.0
MEMORY = f"{qemu.MEMORY_MB}M"
MANIFEST_FW_CFG = "opt/tdxsim/manifest"

# The boots' figures (sizes, timings) go next to the session's VM files, in pytest's
# temporary directory (``--basetemp`` chooses it), never into the source tree.
FIGURES_NAME = "figures.json"


class Attempt(NamedTuple):
    """One boot attestation as the verifier recorded it."""

    image: str | None
    verdict: str
    reason: str | None
    event_log_bytes: int | None


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
    platform_file: Path
    passphrase: bytes = field(repr=False)
    figures: dict[str, object] = field(default_factory=dict)

    def build_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Build-time overrides for our hook and the simulator's test hook."""
        return images.build_env(
            {
                "TDX_BOOT_ATTEST_PREFIX": str(self.venv),
                "TDX_BOOT_ATTEST_CONFIG": str(self.agent_conf),
                "TDXSIM_TEST_LIB": str(self.sim_lib),
                "TDXSIM_TEST_STATE": str(self.state_dir),
                **(extra or {}),
            }
        )

    def approve(self, image: str, initrd: Path, cmdline: str) -> None:
        """Register ``image`` as an image builder does: measure the kernel, ``initrd`` and
        ``cmdline`` on the platform, then add it from the manifest alone."""
        manifest = self.root / f"{image}.approved-manifest.json"
        self.server.cli(
            "image", "measure", "--kernel", str(self.kernel.vmlinuz), "--initrd", str(initrd),
            "--cmdline", cmdline, "--memory", MEMORY, "--platform-file", str(self.platform_file),
            "--out", str(manifest),
        )  # fmt: skip
        self.server.add_image(
            image, passphrase=self.passphrase, extra_args=("--from-measurements", str(manifest))
        )

    def retire(self, image: str) -> None:
        """Stop approving ``image``, so the next module's refusals name its own image."""
        self.server.cli("image", "retire", image)

    def measured_boot(self, initrd: Path, cmdline: str, name: str) -> Path:
        """The manifest of QEMU loading the kernel, ``initrd`` and ``cmdline``: what the
        guest's simulator is handed."""
        spec = BootSpec(
            platform=Component.builtin(DEFAULT_PLATFORM),
            kernel=Component.file(self.kernel.vmlinuz),
            initrd=Component.file(initrd),
            cmdline=cmdline,
            memory=MEMORY,
        )
        path = self.root / f"{name}.manifest.json"
        path.write_text(json.dumps(simulate(spec).manifest.to_json(), indent=2) + "\n")
        return path

    def boot(self, initrd: Path, cmdline: str, name: str) -> qemu.BootResult:
        """Boot ``initrd`` with ``cmdline``, the guest's simulator measuring exactly that;
        console in ``root/name.console``."""
        manifest = self.measured_boot(initrd, cmdline, name)
        return qemu.boot(
            kernel=self.kernel.vmlinuz,
            initrd=initrd,
            disk=self.disk,
            append=cmdline,
            console=self.root / f"{name}.console",
            timeout=BOOT_TIMEOUT,
            fw_cfg=[(MANIFEST_FW_CFG, manifest)],
        )

    def last_attempt(self) -> Attempt:
        """The newest boot attestation the verifier recorded."""
        with sqlite3.connect(self.root / "server" / "verifier.db") as db:
            row = db.execute(
                "SELECT image_name, verdict, reason, length(event_log) FROM boot_attestations "
                "ORDER BY created_at DESC LIMIT 1"
            ).fetchone()
        assert row is not None, "the verifier recorded no attempt"
        return Attempt(*row)


def guest_url(server: LiveServer) -> str:
    """The server's URL as the guest sees it: QEMU's user network maps 10.0.2.2 to host."""
    port = server.base_url.rsplit(":", 1)[1]
    return f"http://10.0.2.2:{port}"


def console_refusal(result: qemu.BootResult) -> str:
    """The kernel's record of the agent's refusal line, its message's quotes unescaped."""
    record = result.kernel_record("tdx-boot-attest: FAILED reason=")
    assert record is not None, result.describe()
    return record.replace('\\"', '"')


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
    SimState.init(state_dir, seed=7)
    platform_file = root / f"platform-{DEFAULT_PLATFORM}.json"
    platform_file.write_text(json.dumps(builtin_platform(DEFAULT_PLATFORM).to_json(), indent=2))
    sim_lib = images.stage_simulator(root / "simlib")
    passphrase = b"tdx-vm-test-" + secrets.token_hex(16).encode()
    volume_uuid = str(uuid.uuid4())
    marker = secrets.token_hex(16)
    disk = root / "root.img"
    images.make_luks_disk(disk, passphrase=passphrase, marker=marker, uuid=volume_uuid)
    with simulator_server(root, state_dir) as server:
        agent_conf = images.write_agent_config(
            root / "agent.conf", url=guest_url(server), uuid=volume_uuid
        )
        world = VmWorld(
            root, kernel, venv, state_dir, sim_lib, server, disk, marker, volume_uuid,
            agent_conf, platform_file, passphrase,
        )  # fmt: skip
        yield world
        figures_file = root / FIGURES_NAME
        figures_file.write_text(json.dumps(world.figures, indent=2, sort_keys=True) + "\n")
