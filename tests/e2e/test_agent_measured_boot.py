"""Measured boot end to end: an image approved from its measurement manifest alone.

The image builder's flow with real commands: ``tdxsim profile inputs`` writes the kernel,
initrd, command line and platform a simulated VM boots, ``tdx-attest-server image
measure`` computes the manifest and ``image add --from-measurements`` registers it, with
no golden quote. The real agent process reads the firmware event log (CCEL) from the
simulated device (FUSE), sends it with the quote over real HTTP, and unlocks a real LUKS2
volume. A VM whose kernel, initrd or command line drifted, one at a time, is refused with
a console line naming that component; an agent that sends no event log still unlocks.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tdx_boot_attest.agent.eventlog import parse_event_log
from tdx_boot_attest.tdxsim.measured_boot import Component
from tdx_boot_attest.tdxsim.profile import Profile
from tdx_boot_attest.tdxsim.state import SimState
from tdx_boot_attest.tdxsim.tsm.device import EVENT_LOG_FILE
from tests.support.agent_e2e import (
    AgentRun,
    agent_argv,
    files_containing,
    make_luks_image,
    new_passphrase,
    run_agent,
    write_agent_config,
)
from tests.support.live_server import LiveServer, run_cli, simulator_server
from tests.support.tsm_mount import mounted_tsm

pytestmark = pytest.mark.slow

TDXSIM = Path(sys.executable).with_name("tdxsim")


@dataclass
class World:
    """A verifier that approved the ``default`` image from its manifest, a golden VM's
    device, the disk."""

    root: Path
    state_dir: Path
    golden_mount: Path
    server: LiveServer
    passphrase: bytes
    disk: Path
    manifest: dict[str, object]


def _measure_and_register(root: Path, server: LiveServer, passphrase: bytes) -> Path:
    """The image builder: the VM's boot inputs as files, measured, then registered."""
    inputs = root / "image"
    listing = subprocess.run(
        [str(TDXSIM), "profile", "inputs", "default", "--out-dir", str(inputs)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    assert "tdx-attest-server image measure" in listing
    manifest = root / "manifest.json"
    run_cli(
        server.env, "image", "measure",
        "--kernel", str(inputs / "vmlinuz-6.1.0-18-amd64"),
        "--initrd", str(inputs / "initrd.img-6.1.0-18-amd64"),
        "--cmdline-file", str(inputs / "cmdline"), "--memory", "2G",
        "--platform-file", str(inputs / "platform-qemu-tdvf.json"), "--out", str(manifest),
        log_path=server.log_path,
    )  # fmt: skip
    server.add_image(
        "golden", passphrase=passphrase, extra_args=("--from-measurements", str(manifest))
    )
    return manifest


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("measured-e2e")
    state_dir = root / "sim"
    SimState.init(state_dir, seed=6)
    passphrase = new_passphrase()
    disk = root / "luks.img"
    make_luks_image(disk, passphrase)
    golden_mount = root / "tsm-golden"
    with mounted_tsm(state_dir, golden_mount), simulator_server(root, state_dir) as server:
        manifest = _measure_and_register(root, server, passphrase)
        yield World(
            root,
            state_dir,
            golden_mount,
            server,
            passphrase,
            disk,
            json.loads(manifest.read_text()),
        )


@pytest.fixture
def case(world: World, tmp_path: Path, memory_dir: Path) -> Iterator[Path]:
    """A per-test directory; afterwards no file of the module or test holds the key.

    ``identity`` in it links to a tmpfs directory: the VM's /run, for its identity key.
    """
    (tmp_path / "cmdline").write_text("BOOT_IMAGE=/vmlinuz quiet\n")
    (tmp_path / "kmsg").touch()
    (tmp_path / "identity").symlink_to(memory_dir)
    yield tmp_path
    assert files_containing(world.root, world.passphrase) == []
    assert files_containing(tmp_path, world.passphrase) == []


def boot(world: World, case: Path, mount: Path, event_log: Path | None) -> AgentRun:
    config = write_agent_config(
        case / "agent.conf",
        url=world.server.base_url,
        tsm_root=mount / "report",
        volumes=[("root", world.disk)],
        deadline=120,
        on_failure="poweroff",
        actions_log=case / "actions.log",
        event_log=event_log,
        identity_path=case / "identity" / "tdx-boot-attest" / "identity.key",
    )
    run = run_agent(agent_argv("boot", config, case / "cmdline", case / "kmsg"), world.passphrase)
    assert run.argv_hits == []
    assert world.passphrase not in run.stdout + run.stderr
    assert world.passphrase not in world.server.logs().encode()
    return run


def last_attempt(world: World) -> tuple[str, str | None, bytes | None, str | None]:
    """verdict, reason, event_log, differences of the newest boot attestation row."""
    with sqlite3.connect(world.root / "server" / "verifier.db") as db:
        row = db.execute(
            "SELECT verdict, reason, event_log, differences FROM boot_attestations "
            "ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
    assert row is not None
    return row[0], row[1], row[2], row[3]


def test_the_image_is_approved_from_its_manifest_with_reference_events(world: World) -> None:
    shown = json.loads(world.server.cli("image", "show", "golden", "--json").stdout)
    golden = Profile.default()

    text = json.dumps(shown)
    assert golden.rtmr1 in text and golden.rtmr2 in text and golden.mrtd in text
    assert "initrd.img-6.1.0-18-amd64" in text  # the reference events name their inputs
    assert [world.manifest[f"rtmr{n}"] for n in range(4)] == list(golden.rtmrs)


def test_the_agent_sends_the_devices_event_log_and_unlocks(world: World, case: Path) -> None:
    device_log = world.golden_mount / EVENT_LOG_FILE

    run = boot(world, case, world.golden_mount, device_log)

    assert run.returncode == 0, run.err
    assert 'OK unlocked volume="root"' in run.err
    assert "attesting without it" not in run.err
    verdict, reason, sent, _ = last_attempt(world)
    records = parse_event_log(device_log.read_bytes()).length
    assert (verdict, reason) == ("accepted", None)
    assert sent == device_log.read_bytes()[:records]  # the log, without its padding
    assert len(parse_event_log(sent).events) == 20


@pytest.mark.parametrize(
    ("change", "register", "named"),
    [
        (
            {"kernel": Component.synthetic("vmlinuz-6.1.0-21-amd64")},
            "rtmr1",
            "boot application kernel (kernel)",
        ),
        (
            {"initrd": Component.synthetic("initrd.img-6.1.0-18-amd64 rebuilt")},
            "rtmr2",
            '"Linux initrd" (initrd)',
        ),
        (
            {"cmdline": "root=/dev/mapper/root ro console=ttyS0 init=/bin/sh"},
            "rtmr2",
            '"LOADED_IMAGE::LoadOptions" (kernel command line)',
        ),
    ],
    ids=["kernel", "initrd", "cmdline"],
)
def test_a_drifted_component_is_refused_and_named_on_the_console(
    world: World, case: Path, change: dict[str, object], register: str, named: str
) -> None:
    drifted = case / "drifted.json"
    Profile.default().with_components(**change).replace(name="drifted").save(drifted)
    mount = case / "tsm"

    with mounted_tsm(world.state_dir, mount, "--profile", str(drifted)):
        run = boot(world, case, mount, mount / EVENT_LOG_FILE)

    assert run.returncode == 5, run.err
    # The console line quotes its message: event names' own quotes come escaped.
    failed = [line.replace('\\"', '"') for line in run.err.splitlines() if "FAILED reason=" in line]
    assert len(failed) == 1, run.err
    assert "reason=measurement_mismatch" in failed[0]
    assert f"{register} differs from image golden: {named}" in failed[0]
    assert "everything else equal" in failed[0]
    assert named in (case / "kmsg").read_text().replace('\\"', '"')
    assert (case / "actions.log").read_text() == "poweroff\n"
    verdict, reason, sent, differences = last_attempt(world)
    assert (verdict, reason) == ("refused", "measurement_mismatch")
    assert sent is not None
    assert [d["rtmr"] for d in json.loads(differences or "[]")] == [register]


def test_an_agent_that_sends_no_event_log_still_unlocks(world: World, case: Path) -> None:
    run = boot(world, case, world.golden_mount, case / "no-ccel-here")

    assert run.returncode == 0, run.err
    assert 'OK unlocked volume="root"' in run.err
    assert "attesting without it" in run.err
    verdict, _, sent, _ = last_attempt(world)
    assert (verdict, sent) == ("accepted", None)
