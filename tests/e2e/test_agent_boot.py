"""The real agent process against the real verifier, the FUSE configfs-tsm and real LUKS2.

Every test also proves the key never shows up where it must not: the agent's output,
the kernel-log file, the server's log, any file of the test, or any process's argv or
environment (sampled from /proc while the agent runs).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tdx_boot_attest.agent.identity import load_identity
from tdx_boot_attest.tdxsim.profile import Profile
from tdx_boot_attest.tdxsim.state import SimState
from tests.support.agent_e2e import (
    AgentRun,
    ProcessSampler,
    agent_argv,
    background,
    files_containing,
    make_luks_image,
    new_passphrase,
    passphrase_opens,
    run_agent,
    write_agent_config,
)
from tests.support.live_server import LiveServer, free_port, simulator_server
from tests.support.tls_app import make_ca, make_server_cert
from tests.support.tsm_mount import mounted_tsm

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class World:
    """The module's shared pieces: simulator, mount, server with the golden image, disk."""

    root: Path
    state_dir: Path
    mount: Path
    server: LiveServer
    passphrase: bytes
    image: Path
    other_profile: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("agent-e2e")
    state_dir = root / "sim"
    SimState.init(state_dir, seed=5)
    other_profile = root / "other-profile.json"
    Profile.builtin("other").save(other_profile)  # another kernel: RTMR1 differs
    passphrase = new_passphrase()
    image = root / "luks.img"
    make_luks_image(image, passphrase)
    mount = root / "tsm"
    with (
        mounted_tsm(state_dir, mount),
        simulator_server(root, state_dir) as server,
    ):
        # The operator's flow: the agent's own diagnostics produce the golden quote.
        golden = root / "golden.quote"
        subprocess.run(
            [str(Path(sys.executable).with_name("tdx-boot-agent")), "quote",
             "--tsm-root", str(mount / "report"), "--out", str(golden), "--kmsg", "/nonexistent"],
            check=True,
            capture_output=True,
        )  # fmt: skip
        server.add_image("golden", passphrase=passphrase, quote_file=golden)
        yield World(root, state_dir, mount, server, passphrase, image, other_profile)


@pytest.fixture
def case(world: World, tmp_path: Path, memory_dir: Path) -> Iterator[Path]:
    """A per-test directory; afterwards no file of the module or test holds the key.

    ``identity`` in it links to a tmpfs directory: the VM's /run, for its identity key.
    """
    (tmp_path / "cmdline").write_text("BOOT_IMAGE=/vmlinuz quiet\n")
    (tmp_path / "kmsg").touch()
    (tmp_path / "identity").symlink_to(memory_dir)
    yield tmp_path
    leaks = files_containing(world.root, world.passphrase) + files_containing(
        tmp_path, world.passphrase
    )
    assert leaks == []


def assert_no_leak(run: AgentRun, world: World, *, stdout_is_key: bool = False) -> None:
    assert run.argv_hits == [], run.argv_hits
    assert run.samples > 0
    assert world.passphrase not in run.stderr
    if not stdout_is_key:
        assert world.passphrase not in run.stdout
    assert world.passphrase not in world.server.logs().encode()


def config(case: Path, world: World, **kwargs: object) -> Path:
    defaults: dict[str, object] = {
        "url": world.server.base_url,
        "tsm_root": world.mount / "report",
        "volumes": [("root", world.image)],
        "actions_log": case / "actions.log",
        "identity_path": case / "identity" / "tdx-boot-attest" / "identity.key",
    }
    defaults.update(kwargs)
    return write_agent_config(case / "agent.conf", **defaults)  # type: ignore[arg-type]


def argv(case: Path, command: str, conf: Path) -> list[str]:
    return agent_argv(command, conf, case / "cmdline", case / "kmsg")


def test_keyscript_output_opens_the_luks_image(world: World, case: Path) -> None:
    conf = config(case, world)
    with ProcessSampler(world.passphrase) as sampler:
        agent = subprocess.Popen(
            argv(case, "keyscript", conf),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "CRYPTTAB_NAME": "root"},
        )
        assert agent.stdout is not None
        cryptsetup = subprocess.run(
            ["cryptsetup", "open", "--test-passphrase", "--key-file=-", str(world.image)],
            stdin=agent.stdout,
            capture_output=True,
            timeout=120,
            check=False,
        )
        agent.stdout.close()
        _, err = agent.communicate(timeout=120)
    assert agent.returncode == 0, err
    assert cryptsetup.returncode == 0, cryptsetup.stderr
    assert sampler.hits == []
    assert b'tdx-boot-attest: OK key released image="golden"' in err
    assert world.passphrase not in err
    assert b"OK key released" in (case / "kmsg").read_bytes()


def test_boot_opens_every_volume_with_the_configured_cryptsetup(world: World, case: Path) -> None:
    run = run_agent(argv(case, "boot", config(case, world)), world.passphrase)
    assert run.returncode == 0, run.err
    assert 'OK unlocked volume="root"' in run.err
    assert 'OK unlocked volume="root"' in (case / "kmsg").read_text()
    assert not (case / "actions.log").exists()
    assert_no_leak(run, world)


def test_the_boot_binds_an_identity_key_kept_in_memory_only(world: World, case: Path) -> None:
    conf = config(case, world)
    first = run_agent(argv(case, "boot", conf), world.passphrase)
    assert first.returncode == 0, first.err
    key_file = case / "identity" / "tdx-boot-attest" / "identity.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    secret = key_file.read_bytes()
    public = load_identity(key_file).public_key.hex()
    # A second run in the same boot (keyscript for another volume) keeps the same key.
    second = run_agent(argv(case, "keyscript", conf), secret)
    assert second.returncode == 0, second.err
    assert key_file.read_bytes() == secret
    assert second.argv_hits == []
    rows = sqlite3.connect(world.root / "server" / "verifier.db").execute(
        "SELECT identity_key FROM boot_attestations WHERE verdict = 'accepted' "
        "ORDER BY created_at DESC LIMIT 2"
    )
    assert [row[0] for row in rows] == [public, public]
    # The private key is in no file but its own, no log and no output.
    for run in (first, second):
        assert secret not in run.stdout + run.stderr
        assert secret.hex().encode() not in run.stdout + run.stderr
    assert files_containing(world.root, secret) == []
    assert files_containing(case, secret) == []
    assert secret.hex() not in world.server.logs()


def test_boot_with_the_hybrid_post_quantum_kem(world: World, case: Path) -> None:
    run = run_agent(
        argv(case, "boot", config(case, world, kem="mlkem768-x25519")), world.passphrase
    )
    assert run.returncode == 0, run.err
    assert 'OK unlocked volume="root"' in run.err
    assert_no_leak(run, world)


def test_a_wrong_key_is_not_accepted_by_the_image(world: World) -> None:
    """Control for the two tests above: --test-passphrase really checks the key."""
    assert passphrase_opens(world.image, world.passphrase)
    assert not passphrase_opens(world.image, world.passphrase + b"x")


def test_server_down_at_start_then_up(world: World, case: Path) -> None:
    port = free_port()
    conf = config(case, world, url=f"http://127.0.0.1:{port}", deadline=60)
    env = dict(world.server.env)
    serve = [str(Path(sys.executable).with_name("tdx-attest-server")), "serve",
             "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with ProcessSampler(world.passphrase) as sampler:
        agent = subprocess.Popen(
            argv(case, "boot", conf), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        # The server starts only once the agent has said it will retry: its first attempt
        # has certainly met no server, however slowly the agent started.
        assert agent.stderr is not None
        early = b""
        while b"retrying in" not in early:
            line = agent.stderr.readline()
            assert line, f"the agent stopped before retrying: {early.decode()}"
            early += line
        assert agent.poll() is None, "the agent must still be waiting for the server"
        with background(serve, case / "late-server.log", env):
            out, err = agent.communicate(timeout=60)
        err = early + err
    text = err.decode()
    assert agent.returncode == 0, text
    assert "retrying in" in text
    assert "server_unreachable" in text
    assert 'OK unlocked volume="root"' in text
    assert sampler.hits == []
    assert world.passphrase not in out + err


def test_refusal_stops_at_once_with_the_reason_and_the_failure_action(
    world: World, case: Path
) -> None:
    other_mount = case / "other-tsm"
    with mounted_tsm(world.state_dir, other_mount, "--profile", str(world.other_profile)):
        conf = config(
            case, world, tsm_root=other_mount / "report", deadline=120, on_failure="poweroff"
        )
        run = run_agent(argv(case, "boot", conf), world.passphrase)
    assert run.returncode == 5, run.err
    assert "tdx-boot-attest: FAILED reason=measurement_mismatch" in run.err
    assert "rtmr1" in run.err
    assert "FAILED reason=measurement_mismatch" in (case / "kmsg").read_text()
    assert "retrying" not in run.err
    assert run.seconds < 30, "a definitive refusal must not be retried until the deadline"
    assert (case / "actions.log").read_text() == "poweroff\n"
    assert_no_leak(run, world)


def test_no_tsm_provider(world: World, case: Path) -> None:
    mount = case / "no-provider"
    with mounted_tsm(world.state_dir, mount, "--fault", "provider=none"):
        conf = config(case, world, tsm_root=mount / "report", on_failure="reboot")
        run = run_agent(argv(case, "boot", conf), world.passphrase)
    assert run.returncode == 3, run.err
    assert "FAILED reason=tsm_unavailable" in run.err
    assert (case / "actions.log").read_text() == "reboot\n"
    assert_no_leak(run, world)


def test_device_never_appears(world: World, case: Path) -> None:
    conf = config(
        case,
        world,
        volumes=[("root", case / "never-there.img")],
        device_timeout=1.5,
        on_failure="poweroff",
    )
    run = run_agent(argv(case, "boot", conf), world.passphrase)
    assert run.returncode == 6, run.err
    assert "FAILED reason=device_not_found" in run.err
    assert "within 1.5 s" in run.err
    assert (case / "actions.log").read_text() == "poweroff\n"
    assert_no_leak(run, world)


@pytest.fixture
def tls_server(world: World, case: Path) -> Iterator[tuple[str, Path, Path]]:
    """The real app over TLS (uvicorn --ssl-*), with its CA and an unrelated CA."""
    right_ca, ca_key, ca_cert = make_ca(case, "right")
    wrong_ca, _, _ = make_ca(case, "wrong")
    cert, key = make_server_cert(case, ca_key, ca_cert)
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "tests.support.tls_app:build", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        "--ssl-keyfile", str(key), "--ssl-certfile", str(cert),
    ]  # fmt: skip
    env = {**world.server.env, "PYTHONPATH": str(REPO_ROOT)}
    url = f"https://127.0.0.1:{port}"
    with background(command, case / "tls-server.log", env) as proc:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (case / "tls-server.log").read_text()
            try:
                requests.get(url + "/healthz", verify=str(right_ca), timeout=1)
                break
            except requests.RequestException:
                assert time.monotonic() < deadline, "TLS server did not start"
                time.sleep(0.1)
        yield url, right_ca, wrong_ca


def test_tls_with_a_wrong_ca_is_refused_at_once(
    world: World, case: Path, tls_server: tuple[str, Path, Path]
) -> None:
    url, _, wrong_ca = tls_server
    conf = config(case, world, url=url, ca_bundle=wrong_ca, deadline=120, on_failure="poweroff")
    run = run_agent(argv(case, "boot", conf), world.passphrase)
    assert run.returncode == 4, run.err
    assert "FAILED reason=tls_untrusted" in run.err
    assert "CERTIFICATE_VERIFY_FAILED" in run.err
    assert run.seconds < 30
    assert (case / "actions.log").read_text() == "poweroff\n"
    assert_no_leak(run, world)


def test_tls_with_the_right_ca_unlocks(
    world: World, case: Path, tls_server: tuple[str, Path, Path]
) -> None:
    url, right_ca, _ = tls_server
    conf = config(case, world, url=url, ca_bundle=right_ca)
    run = run_agent(argv(case, "boot", conf), world.passphrase)
    assert run.returncode == 0, run.err
    assert 'OK unlocked volume="root"' in run.err
    assert_no_leak(run, world)


def test_plain_http_without_allow_http_sends_nothing(world: World, case: Path) -> None:
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        conf = case / "agent.conf"
        conf.write_text(f"[server]\nurl = http://127.0.0.1:{port}\n[volume root]\ndevice = /x\n")
        run = run_agent(argv(case, "boot", conf), world.passphrase)
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert run.returncode == 2
    assert "FAILED reason=config_invalid" in run.err
    assert "[server] url in" in run.err


def test_check_sees_config_tsm_server_and_device(world: World, case: Path) -> None:
    run = run_agent(argv(case, "check", config(case, world)), world.passphrase)
    out = run.stdout.decode()
    assert run.returncode == 0, out + run.err
    assert "ok     tsm:" in out
    assert "provider tdx_guest" in out
    assert "ok     server:" in out
    assert "ok     volume root:" in out
    assert_no_leak(run, world)


def test_the_leak_detectors_do_detect(tmp_path: Path) -> None:
    """Control for every no-leak assertion above: a planted secret is found."""
    secret = new_passphrase()
    run = run_agent(["/bin/sh", "-c", "sleep 0.5", secret.decode()], secret)
    assert run.argv_hits, "the /proc sampler must see a secret in a command line"
    run = run_agent(["/bin/sh", "-c", "sleep 0.5"], secret, env={"PLANTED": secret.decode()})
    assert run.argv_hits, "the /proc sampler must see a secret in an environment"
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "file").write_bytes(b"x" + secret + b"y")
    assert files_containing(tmp_path, secret) == [tmp_path / "deep" / "er" / "file"]
