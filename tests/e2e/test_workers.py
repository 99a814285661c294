"""`serve --workers N`: one listening socket per worker, connections spread, workers restarted."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tdx_boot_attest.server.workers import bind_sockets
from tdx_boot_attest.tdxsim.state import SimState
from tests.support.boot_client import AgentKey, expected_report_data, get_nonce, post_quote
from tests.support.live_server import live_server

PASSPHRASE = b"luks-pw-workers-61e0b3"
STATE_WAIT_SECONDS = 60.0


def _children(pid: int) -> set[int]:
    """The worker processes of the server ``pid`` (not multiprocessing's helpers)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == pid and b"spawn_main" in command:
            found.add(int(entry.name))
    return found


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + STATE_WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def test_sockets_share_one_port() -> None:
    sockets = bind_sockets("127.0.0.1", 0, 3)
    try:
        ports = {sock.getsockname()[1] for sock in sockets}
        assert len(ports) == 1 and ports != {0}
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.slow
def test_a_worker_that_dies_is_replaced_and_no_boot_is_lost(tmp_path: Path) -> None:
    sim = SimState.init(tmp_path / "sim", seed=31)
    golden = tmp_path / "golden.quote"
    golden.write_bytes(sim.make_quote(bytes(64)))
    with (
        live_server(
            tmp_path / "srv",
            f"sqlite:///{tmp_path / 'verifier.db'}",
            trust_root=sim.path / "root_ca.der",
            collateral_file=sim.path / "collateral.json",
            workers=2,
        ) as server,
    ):
        server.add_image("golden", passphrase=PASSPHRASE, quote_file=golden)
        # Every worker serves (each has its own socket): wait until both are up.
        _wait_for(lambda: len(_children(server.process.pid)) >= 2, "two workers")
        victim = min(_children(server.process.pid))
        os.kill(victim, signal.SIGKILL)
        _wait_for(
            lambda: (
                victim not in _children(server.process.pid)
                and len(_children(server.process.pid)) >= 2
            ),
            "the killed worker to be replaced",
        )
        for _ in range(20):
            # A new connection each time: the kernel spreads them over both sockets.
            with httpx.Client(base_url=server.base_url, timeout=60) as client:
                key = AgentKey.generate()
                nonce = get_nonce(client)
                quote = sim.make_quote(expected_report_data(nonce, key))
                response = post_quote(client, quote, key, nonce.hex())
                assert response.status_code == 200, response.text
                assert key.open(response.json()["sealed_key"], nonce) == PASSPHRASE
    assert server.process.returncode == 0
