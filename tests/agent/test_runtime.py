"""Runtime attestation: miner request signing (hotkey file, bearer token) and the exchange."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sr25519

from tdx_boot_attest.agent import protocol
from tdx_boot_attest.agent.auth import BearerSigner, HotkeyError, HotkeySigner, signing_message
from tdx_boot_attest.agent.cli import main
from tdx_boot_attest.agent.errors import LocalReason, ServerRefused
from tdx_boot_attest.agent.http_client import BootClient, make_session
from tdx_boot_attest.agent.identity import Identity, load_or_create_identity
from tdx_boot_attest.agent.quote import parse_quote
from tdx_boot_attest.agent.runtime import attest_runtime, runtime_paths
from tests.agent.test_http_client import FakeClock, SyntheticQuotes, refusal
from tests.support.scripted_http import Answer, Request, ScriptedServer

SEED = hashlib.sha256(b"runtime-test-miner").digest()
NONCE = "cd" * 32


class Miner:
    """An sr25519 key pair; the agent sends the file's address as is, so any text serves."""

    def __init__(self, seed: bytes) -> None:
        public, secret = sr25519.pair_from_seed(seed)
        self.public_key = bytes(public)
        self.secret_key = bytes(secret)
        self.hotkey = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"


@pytest.fixture
def miner() -> Miner:
    return Miner(SEED)


@pytest.fixture
def hotkey_file(tmp_path: Path, miner: Miner) -> Path:
    path = tmp_path / "hotkey.json"
    path.write_text(
        json.dumps(
            {
                "secretSeed": "0x" + SEED.hex(),
                "publicKey": "0x" + miner.public_key.hex(),
                "ss58Address": miner.hotkey,
            }
        )
    )
    return path


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    with scripted.running():
        yield scripted


@pytest.fixture
def identity(memory_dir: Path) -> Identity:
    return load_or_create_identity(memory_dir / "tdx-boot-attest" / "identity.key")


def verify_signed(request: Request, miner: Miner) -> None:
    """The request carries a request-scope signature of its method, path and body."""
    headers = request.headers
    assert headers[protocol.HOTKEY_HEADER] == miner.hotkey
    assert headers[protocol.SIGNATURE_SCOPE_HEADER] == "request"
    message = signing_message(
        miner.hotkey, headers[protocol.NONCE_HEADER], request.body, request.method, request.path
    )
    signature = bytes.fromhex(headers[protocol.SIGNATURE_HEADER])
    assert sr25519.verify(signature, message, miner.public_key)


def test_signatures_match_the_server_side_rule(hotkey_file: Path, miner: Miner) -> None:
    signer = HotkeySigner.from_file(hotkey_file, clock=lambda: 1_700_000_000.7)
    body = b'{"quote":"AAAA"}'
    headers = signer.headers("POST", "/servers/node-1/attestation", body)
    assert headers[protocol.NONCE_HEADER] == "1700000000"
    assert headers[protocol.SIGNATURE_SCOPE_HEADER] == "request"
    digest = hashlib.sha256(body).hexdigest()
    message = f"{miner.hotkey}:1700000000:{digest}:POST:/servers/node-1/attestation".encode()
    assert sr25519.verify(
        bytes.fromhex(headers[protocol.SIGNATURE_HEADER]), message, miner.public_key
    )
    bodyless = signer.headers("get", "/servers/node-1/nonce", b"")
    tee = f"{miner.hotkey}:1700000000:tee:GET:/servers/node-1/nonce".encode()
    assert sr25519.verify(bytes.fromhex(bodyless[protocol.SIGNATURE_HEADER]), tee, miner.public_key)
    # The Chutes form (no method): hotkey, timestamp and body only.
    chutes = f"{miner.hotkey}:1700000000:{digest}".encode()
    assert signing_message(miner.hotkey, "1700000000", body) == chutes


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not JSON"),
        ("[]", "not a JSON object"),
        ('{"secretSeed": "00"}', "ss58Address"),
        ('{"ss58Address": "5x"}', "secretSeed"),
        ('{"ss58Address": "5x", "secretSeed": "0xzz"}', "not hexadecimal"),
        ('{"ss58Address": "5x", "secretSeed": "0x00"}', "32 bytes"),
        (
            '{"ss58Address": "5x", "secretSeed": "0x' + "11" * 32 + '", "publicKey": "0x00"}',
            "does not belong",
        ),
    ],
)
def test_bad_hotkey_files_are_named_without_the_secret(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "hotkey.json"
    path.write_text(content)
    with pytest.raises(HotkeyError) as caught:
        HotkeySigner.from_file(path)
    assert message in caught.value.message
    assert "11" * 32 not in caught.value.message


def test_bearer_signer() -> None:
    assert BearerSigner("tok").headers("POST", "/x", b"x") == {"Authorization": "Bearer tok"}


def test_runtime_paths_escape_the_id() -> None:
    assert runtime_paths("node/1") == ("/servers/node%2F1/nonce", "/servers/node%2F1/attestation")


def test_runtime_exchange(
    server: ScriptedServer, hotkey_file: Path, miner: Miner, identity: Identity
) -> None:
    nonce_path, attestation_path = runtime_paths("node-1")

    def attestation(request: Request) -> Answer:
        verify_signed(request, miner)
        body = json.loads(request.body)
        quote = base64.b64decode(body["quote"])
        nonce = bytes.fromhex(NONCE)
        # v2: REPORTDATA binds this boot's identity key, and the key signs the attempt.
        assert parse_quote(quote).report_data == protocol.runtime_report_data(
            nonce, identity.public_key
        )
        message = protocol.runtime_signature_message("node-1", nonce, quote)
        signature = base64.b64decode(body["identity_signature"])
        assert protocol.identity_signature_is_valid(identity.public_key, signature, message)
        assert not protocol.identity_signature_is_valid(
            identity.public_key,
            signature,
            protocol.runtime_signature_message("node-2", nonce, quote),
        )
        return Answer(200, {"verified": True, "attestation_id": "rt-1"})

    server.script("GET", nonce_path, Answer(200, {"nonce": NONCE, "expires_at": "x"}))
    server.script("POST", attestation_path, attestation)
    clock = FakeClock()
    client = BootClient(
        server.url, make_session(None), SyntheticQuotes(), clock=clock, sleep=clock.sleep
    )
    answer = attest_runtime(client, HotkeySigner.from_file(hotkey_file), identity, "node-1", 30)
    assert answer == {"verified": True, "attestation_id": "rt-1"}
    verify_signed(server.requests[0], miner)
    assert server.requests[0].body == b""
    assert "event_log" not in json.loads(server.requests[1].body)


def test_runtime_attestation_carries_the_event_log(
    server: ScriptedServer, hotkey_file: Path, miner: Miner, identity: Identity
) -> None:
    nonce_path, attestation_path = runtime_paths("node-1")
    server.script("GET", nonce_path, Answer(200, {"nonce": NONCE, "expires_at": "x"}))
    server.script("POST", attestation_path, Answer(200, {"verified": True}))
    clock = FakeClock()
    client = BootClient(
        server.url,
        make_session(None),
        SyntheticQuotes(),
        clock=clock,
        sleep=clock.sleep,
        event_log=b"log bytes",
    )
    attest_runtime(client, HotkeySigner.from_file(hotkey_file), identity, "node-1", 30)
    post = server.requests[1]
    verify_signed(post, miner)
    assert base64.b64decode(json.loads(post.body)["event_log"]) == b"log bytes"


def test_runtime_refusal_is_final(server: ScriptedServer, identity: Identity) -> None:
    nonce_path, _ = runtime_paths("node-1")
    server.script("GET", nonce_path, refusal(401, "unauthenticated", "bad token"))
    clock = FakeClock()
    client = BootClient(
        server.url, make_session(None), SyntheticQuotes(), clock=clock, sleep=clock.sleep
    )
    with pytest.raises(ServerRefused) as caught:
        attest_runtime(client, BearerSigner("t"), identity, "node-1", 30)
    assert caught.value.reason == "unauthenticated"
    assert server.requests[0].headers["Authorization"] == "Bearer t"


def test_runtime_cli_reads_the_token_from_a_file(
    server: ScriptedServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    identity: Identity,
) -> None:
    nonce_path, _ = runtime_paths("node-1")
    server.script("GET", nonce_path, refusal(401, "unauthenticated", "unknown token"))
    token = tmp_path / "token"
    token.write_text("secret-token-value\n")
    config = tmp_path / "agent.conf"
    config.write_text(
        f"[server]\nurl = {server.url}\nallow_http = true\n[identity]\npath = {identity.path}\n"
    )
    code = main(
        ["runtime", "--config", str(config), "--cmdline", str(tmp_path / "none"),
         "--kmsg", str(tmp_path / "none"), "--server-id", "node-1", "--token", str(token)]
    )  # fmt: skip
    assert code == 5
    assert server.requests[0].headers["Authorization"] == "Bearer secret-token-value"
    captured = capsys.readouterr()
    assert "reason=unauthenticated" in captured.err
    assert "secret-token-value" not in captured.out + captured.err


def test_runtime_cli_without_this_boots_identity_key_sends_nothing(
    server: ScriptedServer,
    tmp_path: Path,
    memory_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token = tmp_path / "token"
    token.write_text("secret-token-value\n")
    config = tmp_path / "agent.conf"
    missing = memory_dir / "tdx-boot-attest" / "identity.key"
    config.write_text(
        f"[server]\nurl = {server.url}\nallow_http = true\n[identity]\npath = {missing}\n"
    )
    code = main(
        ["runtime", "--config", str(config), "--cmdline", str(tmp_path / "none"),
         "--kmsg", str(tmp_path / "none"), "--server-id", "node-1", "--token", str(token)]
    )  # fmt: skip
    assert code == 3
    assert f"reason={LocalReason.IDENTITY_UNAVAILABLE}" in capsys.readouterr().err
    assert server.requests == []
