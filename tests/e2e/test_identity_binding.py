"""Runtime evidence bound to the TD that booted the server, with the real agent processes.

Two simulated TDs of the same approved image on the same platform (two FUSE
configfs-tsm devices over one simulator state), each with its own /run (a tmpfs
directory) for its per-boot identity key, the real verifier (``tdx-attest-server
serve``) and the real ``tdx-boot-agent``. The first TD boots and its miner registers it;
the second boots too (genuinely: it unlocks its own disk), then tries runtime attestation
for the server it did not boot and is refused with its own reason, while the first keeps
passing. A client speaking protocol v1.1 (as agents before v2 do) still unlocks its
disk at boot, and gets a clear refusal at runtime.

The tests of this module run in order: each builds on the boots before it.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tdx_boot_attest.agent.identity import load_identity
from tdx_boot_attest.agent.protocol import runtime_report_data, runtime_signature_message
from tdx_boot_attest.agent.tsm import TsmQuoteProvider
from tdx_boot_attest.tdxsim.state import SimState
from tests.support.agent_e2e import (
    AgentRun,
    agent_argv,
    files_containing,
    make_luks_image,
    new_passphrase,
    passphrase_opens,
    run_agent,
    write_agent_config,
)
from tests.support.legacy_agent import LegacyAgent
from tests.support.live_server import LiveServer, simulator_server
from tests.support.memory import memory_directory
from tests.support.miner_keys import MinerKey, json_body
from tests.support.tsm_mount import mounted_tsm

pytestmark = pytest.mark.slow

SERVER_ID = "node-booted"
LEGACY_ID = "node-legacy"
SEED = bytes(range(32))


@dataclass
class Td:
    """One simulated TD: its configfs-tsm device, its /run and its agent configuration."""

    name: str
    tsm_root: Path
    identity_path: Path
    config: Path

    @property
    def public_key(self) -> str:
        return load_identity(self.identity_path).public_key.hex()


@dataclass
class World:
    root: Path
    server: LiveServer
    miner: MinerKey
    hotkey_file: Path
    passphrase: bytes
    disk: Path
    booted: Td
    other: Td


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("identity-binding")
    state_dir = root / "sim"
    SimState.init(state_dir, seed=13)
    golden = root / "golden.quote"
    golden.write_bytes(SimState.load(state_dir).make_quote(bytes(64)))
    passphrase = new_passphrase()
    disk = root / "luks.img"
    make_luks_image(disk, passphrase)
    miner = MinerKey.from_seed(SEED)
    hotkey_file = root / "hotkey.json"
    hotkey_file.write_text(json.dumps({"secretSeed": SEED.hex(), "ss58Address": miner.hotkey}))
    (root / "cmdline").write_text("quiet\n")
    with ExitStack() as stack:
        server = stack.enter_context(simulator_server(root, state_dir))
        server.add_image("golden", passphrase=passphrase, quote_file=golden)
        server.cli("miner", "add", miner.hotkey)
        tds = []
        for name in ("booted", "other"):
            mount = root / f"tsm-{name}"
            stack.enter_context(mounted_tsm(state_dir, mount))
            run_dir = stack.enter_context(memory_directory(prefix=f"tdx-run-{name}-"))
            identity_path = run_dir / "tdx-boot-attest" / "identity.key"
            config = write_agent_config(
                root / f"{name}.conf",
                url=server.base_url,
                tsm_root=mount / "report",
                identity_path=identity_path,
            )
            tds.append(Td(name, mount / "report", identity_path, config))
        yield World(root, server, miner, hotkey_file, passphrase, disk, *tds)
        assert files_containing(root, passphrase) == []


def agent(world: World, td: Td, command: str, *extra: str) -> AgentRun:
    argv = agent_argv(command, td.config, world.root / "cmdline", world.root / "kmsg", *extra)
    run = run_agent(argv, world.passphrase)
    assert run.argv_hits == []
    return run


def boot(world: World, td: Td) -> None:
    """The TD's keyscript boot; its output must open the LUKS disk."""
    run = agent(world, td, "keyscript")
    assert run.returncode == 0, run.err
    assert passphrase_opens(world.disk, run.stdout)


def runtime(world: World, td: Td, server_id: str = SERVER_ID) -> AgentRun:
    return agent(
        world, td, "runtime", "--server-id", server_id, "--hotkey-file", str(world.hotkey_file)
    )


def signed(world: World, method: str, path: str, payload: object = None) -> httpx.Response:
    body = json_body(payload) if payload is not None else b""
    headers = world.miner.headers(int(time.time()), body, method, path)
    if body:
        headers["Content-Type"] = "application/json"
    return httpx.request(
        method, world.server.base_url + path, content=body or None, headers=headers, timeout=60
    )


def register(world: World, server_id: str, gpu_uuid: str) -> httpx.Response:
    gpus = [
        {"uuid": gpu_uuid, "name": "H100", "memory": 85899345920, "clock_rate": 1980.0,
         "device_index": 0}
    ]  # fmt: skip
    return signed(world, "POST", "/servers/", {"id": server_id, "host": "127.0.0.1", "gpus": gpus})


def last_reason(world: World, server_id: str) -> str | None:
    status = signed(world, "GET", f"/servers/{server_id}/attestation/status")
    assert status.status_code == 200, status.text
    last = status.json()["last_attestation"]
    return None if last is None else last["reason"]


def test_the_booted_td_is_registered_with_its_identity_key(world: World) -> None:
    boot(world, world.booted)
    registered = register(world, SERVER_ID, "GPU-booted-0")
    assert registered.status_code == 201, registered.text
    assert registered.json()["identity_key"] == world.booted.public_key
    assert world.booted.identity_path.stat().st_mode & 0o777 == 0o600


def test_a_second_genuine_td_boots_with_a_key_of_its_own(world: World) -> None:
    boot(world, world.other)
    assert world.other.public_key != world.booted.public_key
    # Its later boot from the same address does not move the registered server.
    shown = signed(world, "GET", f"/servers/{SERVER_ID}").json()
    assert shown["identity_key"] == world.booted.public_key


def test_the_second_td_is_refused_for_a_server_it_did_not_boot(world: World) -> None:
    run = runtime(world, world.other)
    assert run.returncode == 5, run.err
    assert "FAILED reason=identity_mismatch" in run.err
    assert last_reason(world, SERVER_ID) == "identity_mismatch"


def test_the_second_td_cannot_borrow_the_servers_public_key(world: World) -> None:
    """A modified client in the second TD: its quote names the server's (public) key, but
    only its own private key is there to sign with."""
    server_key = bytes.fromhex(world.booted.public_key)
    own = load_identity(world.other.identity_path)
    nonce_answer = signed(world, "GET", f"/servers/{SERVER_ID}/nonce")
    nonce = bytes.fromhex(nonce_answer.json()["nonce"])
    quote = TsmQuoteProvider(world.other.tsm_root).get_quote(runtime_report_data(nonce, server_key))
    signature = own.sign(runtime_signature_message(SERVER_ID, nonce, quote))
    body = {
        "quote": base64.b64encode(quote).decode(),
        "identity_signature": base64.b64encode(signature).decode(),
    }
    answer = signed(world, "POST", f"/servers/{SERVER_ID}/attestation", body)
    assert (answer.status_code, answer.json()["reason"]) == (403, "identity_signature_invalid")


def test_the_booted_td_keeps_passing(world: World) -> None:
    for _ in range(2):
        run = runtime(world, world.booted)
        assert run.returncode == 0, run.err
        assert "tdx-boot-attest: OK runtime attestation" in run.err
        answer = json.loads(run.stdout)
        assert (answer["status"], answer["identity_bound"]) == ("verified", True)
    assert last_reason(world, SERVER_ID) is None
    status = signed(world, "GET", f"/servers/{SERVER_ID}/attestation/status").json()
    assert status["attestation_status"] == "verified"
    secret = world.booted.identity_path.read_bytes()
    assert secret.hex() not in world.server.logs()
    assert files_containing(world.root, secret) == []


def test_an_old_agent_still_unlocks_and_is_refused_at_runtime_with_its_own_reason(
    world: World,
) -> None:
    legacy = LegacyAgent(world.server.base_url, world.other.tsm_root)
    answer, key = legacy.boot()
    assert answer.status_code == 200, answer.text
    assert key is not None and passphrase_opens(world.disk, key)
    registered = register(world, LEGACY_ID, "GPU-legacy-0")
    assert registered.status_code == 201, registered.text
    assert registered.json()["identity_key"] is None
    refused = legacy.runtime(world.miner, LEGACY_ID)
    assert (refused.status_code, refused.json()["reason"]) == (403, "server_identity_unknown")
    # Nor can an old client attest a server bound to a v2 boot.
    refused = legacy.runtime(world.miner, SERVER_ID)
    assert (refused.status_code, refused.json()["reason"]) == (403, "identity_binding_missing")
    # The bound server is still bound to its own boot, and still passes.
    assert runtime(world, world.booted).returncode == 0
