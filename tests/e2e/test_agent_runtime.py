"""``tdx-boot-agent runtime`` against the real verifier: hotkey-signed and bearer-token auth.

A simulated VM boots (the agent's keyscript, so its IP has a recent boot attestation and
the verifier knows its per-boot identity key), the miner registers it, then the agent
runs the runtime attestation as a systemd timer would.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tdx_boot_attest.tdxsim.state import SimState
from tests.support.agent_e2e import (
    agent_argv,
    files_containing,
    new_passphrase,
    run_agent,
    write_agent_config,
)
from tests.support.live_server import LiveServer, simulator_server
from tests.support.memory import memory_directory
from tests.support.miner_keys import MinerKey, json_body
from tests.support.tsm_mount import mounted_tsm

pytestmark = pytest.mark.slow

SERVER_ID = "node-agent-e2e"
SEED = hashlib.sha256(b"agent-runtime-e2e-miner").digest()


@dataclass
class Fleet:
    root: Path
    server: LiveServer
    miner: MinerKey
    config: Path
    hotkey_file: Path
    passphrase: bytes


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("agent-runtime")
    state_dir = root / "sim"
    SimState.init(state_dir, seed=9)
    golden = root / "golden.quote"
    golden.write_bytes(SimState.load(state_dir).make_quote(bytes(64)))
    passphrase = new_passphrase()
    miner = MinerKey.from_seed(SEED)
    hotkey_file = root / "hotkey.json"
    hotkey_file.write_text(
        json.dumps(
            {
                "secretSeed": "0x" + SEED.hex(),
                "publicKey": "0x" + miner.public_key.hex(),
                "ss58Address": miner.hotkey,
            }
        )
    )
    mount = root / "tsm"
    with (
        mounted_tsm(state_dir, mount),
        simulator_server(root, state_dir) as server,
        memory_directory() as run_dir,
    ):
        server.add_image("golden", passphrase=passphrase, quote_file=golden)
        server.cli("miner", "add", miner.hotkey)
        config = write_agent_config(
            root / "agent.conf",
            url=server.base_url,
            tsm_root=mount / "report",
            identity_path=run_dir / "tdx-boot-attest" / "identity.key",
        )
        (root / "cmdline").write_text("quiet\n")
        boot = run_agent(
            agent_argv("keyscript", config, root / "cmdline", root / "kmsg"), passphrase
        )
        assert boot.returncode == 0, boot.err
        body = json_body(
            {
                "id": SERVER_ID,
                "host": "127.0.0.1",
                "gpus": [
                    {"uuid": "GPU-e2e-0", "name": "H100", "memory": 85899345920,
                     "clock_rate": 1980.0, "device_index": 0}
                ],
            }
        )  # fmt: skip
        registered = httpx.post(
            server.base_url + "/servers/",
            content=body,
            headers={"Content-Type": "application/json", **miner.headers(int(time.time()), body)},
        )
        assert registered.status_code == 201, registered.text
        yield Fleet(root, server, miner, config, hotkey_file, passphrase)
        assert files_containing(root, passphrase) == []


def status(fleet: Fleet) -> dict[str, object]:
    headers = fleet.miner.headers(int(time.time()))
    answer = httpx.get(
        f"{fleet.server.base_url}/servers/{SERVER_ID}/attestation/status", headers=headers
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, object] = answer.json()
    return result


def runtime(fleet: Fleet, *auth: str) -> tuple[int, str, str]:
    argv = agent_argv(
        "runtime", fleet.config, fleet.root / "cmdline", fleet.root / "kmsg",
        "--server-id", SERVER_ID, *auth,
    )  # fmt: skip
    run = run_agent(argv, SEED.hex().encode())
    assert run.argv_hits == []
    return run.returncode, run.stdout.decode(), run.err


def test_runtime_attestation_signed_with_the_hotkey(fleet: Fleet) -> None:
    code, out, err = runtime(fleet, "--hotkey-file", str(fleet.hotkey_file))
    assert code == 0, err
    assert "tdx-boot-attest: OK runtime attestation" in err
    answer = json.loads(out)
    assert answer["status"] == "verified"
    assert answer["image"] == "golden"
    current = status(fleet)
    assert current["attestation_status"] == "verified"
    last = current["last_attestation"]
    assert isinstance(last, dict)
    assert last["attestation_id"] == answer["attestation_id"]
    assert SEED.hex() not in out + err


def test_runtime_attestation_with_a_bearer_token_file(fleet: Fleet, tmp_path: Path) -> None:
    issued = fleet.server.cli("miner", "token", "new", fleet.miner.hotkey).stdout.strip()
    token = issued.split()[-1]
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    argv = agent_argv(
        "runtime", fleet.config, fleet.root / "cmdline", fleet.root / "kmsg",
        "--server-id", SERVER_ID, "--token", str(token_file),
    )  # fmt: skip
    run = run_agent(argv, token.encode())
    assert run.returncode == 0, run.err
    assert run.argv_hits == [], "the token must never be in a command line"
    assert token.encode() not in run.stdout + run.stderr


def test_unregistered_hotkey_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    other_seed = hashlib.sha256(b"someone else").digest()
    other = MinerKey.from_seed(other_seed)
    hotkey = tmp_path / "other.json"
    hotkey.write_text(json.dumps({"secretSeed": other_seed.hex(), "ss58Address": other.hotkey}))
    code, _, err = runtime(fleet, "--hotkey-file", str(hotkey))
    assert code == 5, err
    assert "FAILED reason=unauthenticated" in err
