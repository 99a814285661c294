"""The real server process (`tdx-attest-server serve`) end to end with tdxsim, both databases."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tdx_boot_attest.tdxsim.profile import Profile
from tdx_boot_attest.tdxsim.state import SimState
from tests.support.boot_client import AgentKey, expected_report_data, get_nonce, post_quote
from tests.support.live_server import free_port, live_server

pytestmark = pytest.mark.slow
PASSPHRASE = b"luks-pw-e2e-0f9c2d7ab13e"


@pytest.fixture
def sim(tmp_path: Path) -> SimState:
    return SimState.init(tmp_path / "sim", seed=3)


def _secret_forms(secret: bytes) -> list[str]:
    return [secret.decode(), secret.hex(), base64.b64encode(secret).decode()]


def test_boot_unlock_and_refusals_with_clean_logs(
    tmp_path: Path,
    database_url: str,
    sim: SimState,
) -> None:
    golden = tmp_path / "golden.quote"
    golden.write_bytes(sim.make_quote(bytes(64)))
    with (
        live_server(
            tmp_path / "srv",
            database_url,
            trust_root=sim.path / "root_ca.der",
            collateral_file=sim.path / "collateral.json",
        ) as server,
        httpx.Client(base_url=server.base_url, timeout=30) as client,
    ):
        server.add_image("golden", passphrase=PASSPHRASE, quote_file=golden)
        listed = json.loads(server.cli("image", "list", "--json").stdout)
        assert [row["name"] for row in listed] == ["golden"]

        key = AgentKey.generate()
        nonce = get_nonce(client)
        quote = sim.make_quote(expected_report_data(nonce, key))
        accepted = post_quote(client, quote, key, nonce.hex(), vm_name="e2e-vm")
        assert accepted.status_code == 200, accepted.text
        assert key.open(accepted.json()["sealed_key"], nonce) == PASSPHRASE

        refusals = {
            "nonce_used": post_quote(client, quote, key, nonce.hex()),
            "measurement_mismatch": _boot(client, sim, Profile.default().with_rtmr(1, "cd" * 48)),
            "debug_td": _boot(client, sim, None, debug=True),
            "quote_malformed": post_quote(client, "@@@", key, get_nonce(client).hex()),
        }
        for reason, response in refusals.items():
            assert response.json()["reason"] == reason, response.text
        assert "rtmr1 differs" in refusals["measurement_mismatch"].json()["message"]

        server.cli(
            "image",
            "rotate-passphrase",
            "golden",
            "--passphrase-file",
            "-",
            stdin=PASSPHRASE + b"-2",
        )
        metrics = client.get("/metrics").text
        assert (
            'tdx_attest_attestations_total{kind="boot",reason="debug_td",verdict="refused"} 1.0'
            in metrics
        )

    logs = server.logs()
    events = [
        json.loads(line) for line in logs.splitlines() if line.startswith('{"attestation_id"')
    ]
    assert [e["verdict"] for e in events].count("accepted") == 1
    assert {e["reason"] for e in events} >= {None, "nonce_used", "measurement_mismatch", "debug_td"}
    assert all(e["ip"] == "127.0.0.1" and e["latency_ms"] >= 0 for e in events)
    assert any(e["image"] == "golden" for e in events)
    for form in _secret_forms(PASSPHRASE):
        assert form not in logs


def _boot(
    client: httpx.Client, sim: SimState, profile: Profile | None, **kw: Any
) -> httpx.Response:
    key = AgentKey.generate()
    nonce = get_nonce(client)
    return post_quote(
        client, sim.make_quote(expected_report_data(nonce, key), profile, **kw), key, nonce.hex()
    )


def test_openapi_matches_contract(
    tmp_path: Path,
    database_url: str,
    sim: SimState,
) -> None:
    with live_server(tmp_path / "srv", database_url, trust_root=sim.path / "root_ca.der") as server:
        spec = httpx.get(server.base_url + "/openapi.json").json()
        assert httpx.get(server.base_url + "/docs").status_code == 200
    assert "get" in spec["paths"]["/servers/nonce"]
    post = spec["paths"]["/servers/boot/attestation"]["post"]
    header = next(p for p in post["parameters"] if p["name"] == "X-Chutes-Nonce")
    assert header["in"] == "header" and header["required"] is False
    assert {"type": "string"} in header["schema"]["anyOf"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    body = spec["components"]["schemas"][ref]
    assert "quote" in body["required"]
    assert body["properties"]["quote"]["type"] == "string"
    assert {"200", "422"} <= set(post["responses"])


@pytest.fixture
def pcs_process(sim: SimState) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("tdxsim")),
            "pcs",
            "--state",
            str(sim.path),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode().strip()
        url = line.rsplit(" ", 1)[-1]
        assert url == f"http://127.0.0.1:{port}", line
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_collateral_fetched_from_tdxsim_pcs_process(
    tmp_path: Path,
    database_url: str,
    sim: SimState,
    pcs_process: str,
) -> None:
    golden = tmp_path / "golden.quote"
    golden.write_bytes(sim.make_quote(bytes(64)))
    with (
        live_server(
            tmp_path / "srv",
            database_url,
            trust_root=sim.path / "root_ca.der",
            pccs_url=pcs_process,
        ) as server,
        httpx.Client(base_url=server.base_url, timeout=30) as client,
    ):
        server.add_image("golden", passphrase=PASSPHRASE, quote_file=golden)
        response = _boot(client, sim, None)
        assert response.status_code == 200, response.text
        listing = server.cli("collateral", "list").stdout
        assert sim.fmspc.hex() in listing and "fetched" in listing
