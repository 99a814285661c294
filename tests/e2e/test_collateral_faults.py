"""The real server with a collateral service that misbehaves (`tdxsim pcs` as a process).

A service that trickles its answers cannot hold attestations: while the cached
collateral is valid, boots are served from it and one refresh runs in the background,
bounded by one total deadline; without valid collateral, boots wait at most that deadline
for the one fetch in flight. Nothing a client sends without a valid nonce, and no
platform the service does not know, makes the server ask the service again and again.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tdx_boot_attest.tdxsim.state import SimState
from tests.support.boot_client import AgentKey, expected_report_data, get_nonce, post_quote
from tests.support.databases import DB_KINDS, create_postgres_database, drop_postgres_database
from tests.support.live_server import LiveServer, live_server
from tests.support.pcs_process import PcsProcess, pcs_process

pytestmark = pytest.mark.slow
PASSPHRASE = b"luks-pw-collateral-0c41aa"
FETCH_TIMEOUT = "3"
STATE_WAIT_SECONDS = 60.0
# Longer than the collateral's validity: every attestation finds its collateral due for
# refresh, although it is still valid.
ALWAYS_DUE = str(100 * 86400)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimState:
    return SimState.init(tmp_path_factory.mktemp("sim") / "state", seed=17)


@pytest.fixture(params=DB_KINDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'verifier.db'}"
        return
    url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


def _server(
    stack: ExitStack,
    workdir: Path,
    database_url: str,
    sim: SimState,
    pcs: PcsProcess,
    *,
    cached: bool,
    **env: str,
) -> tuple[LiveServer, httpx.Client]:
    server = stack.enter_context(
        live_server(
            workdir,
            database_url,
            trust_root=sim.path / "root_ca.der",
            pccs_url=pcs.url,
            collateral_file=sim.path / "collateral.json" if cached else None,
            extra_env={"TDX_ATTEST_COLLATERAL_FETCH_TIMEOUT_SECONDS": FETCH_TIMEOUT, **env},
        )
    )
    golden = workdir / "golden.quote"
    golden.write_bytes(sim.make_quote(bytes(64)))
    server.add_image("golden", passphrase=PASSPHRASE, quote_file=golden)
    client = stack.enter_context(httpx.Client(base_url=server.base_url, timeout=60))
    return server, client


def _boot(client: httpx.Client, sim: SimState, nonce: bytes | None = None) -> httpx.Response:
    key = AgentKey.generate()
    nonce = nonce if nonce is not None else get_nonce(client)
    response = post_quote(
        client, sim.make_quote(expected_report_data(nonce, key)), key, nonce.hex()
    )
    if response.status_code == 200:
        assert key.open(response.json()["sealed_key"], nonce) == PASSPHRASE
    return response


def _fetches(client: httpx.Client) -> dict[str, float]:
    """The server's collateral fetch metrics: results, and "in_flight"."""
    text = client.get("/metrics").text
    counts = {
        match[1]: float(match[2])
        for match in re.finditer(
            r'^tdx_attest_collateral_fetches_total\{result="(\w+)"\} (\S+)$', text, re.M
        )
    }
    in_flight = re.search(r"^tdx_attest_collateral_fetches_in_flight (\S+)$", text, re.M)
    counts["in_flight"] = float(in_flight[1]) if in_flight else 0.0
    return counts


def _wait_until_no_fetch_runs(client: httpx.Client) -> dict[str, float]:
    deadline = time.monotonic() + STATE_WAIT_SECONDS
    while (fetches := _fetches(client))["in_flight"]:
        assert time.monotonic() < deadline, "a collateral fetch never ended"
        time.sleep(0.1)
    return fetches


def test_a_trickling_pcs_does_not_hold_boots_while_the_cache_is_valid(
    tmp_path: Path, database_url: str, sim: SimState
) -> None:
    with ExitStack() as stack:
        pcs = stack.enter_context(pcs_process(sim.path, "--trickle", "2"))
        _, client = _server(
            stack,
            tmp_path / "srv",
            database_url,
            sim,
            pcs,
            cached=True,
            TDX_ATTEST_COLLATERAL_REFRESH_MARGIN_SECONDS=ALWAYS_DUE,
        )
        with ThreadPoolExecutor(max_workers=20) as pool:
            answers = list(pool.map(lambda _: _boot(client, sim), range(20)))
        assert [answer.status_code for answer in answers] == [200] * 20
        # Other endpoints answer too (no worker is held by a fetch).
        assert client.get("/servers/").status_code == 401
        during = _fetches(client)
        assert during["in_flight"] + sum(v for k, v in during.items() if k != "in_flight") == 1
        # The one refresh gives up at its total deadline, not after the last byte.
        after = _wait_until_no_fetch_runs(client)
        assert after.get("failed") == 1
        assert after.get("fetched", 0) == 0


def test_without_valid_collateral_boots_wait_for_one_fetch_at_most_its_deadline(
    tmp_path: Path, database_url: str, sim: SimState
) -> None:
    with ExitStack() as stack:
        pcs = stack.enter_context(pcs_process(sim.path, "--trickle", "2"))
        _, client = _server(stack, tmp_path / "srv", database_url, sim, pcs, cached=False)
        with ThreadPoolExecutor(max_workers=10) as pool:
            answers = list(pool.map(lambda _: _boot(client, sim), range(10)))
        for answer in answers:
            assert answer.status_code == 503, answer.text
            assert answer.json()["reason"] == "collateral_unavailable"
            assert int(answer.headers["Retry-After"]) > 0
        fetches = _wait_until_no_fetch_runs(client)
        assert fetches.get("failed") == 1


def test_an_unknown_nonce_causes_no_collateral_fetch(
    tmp_path: Path, database_url: str, sim: SimState
) -> None:
    with ExitStack() as stack:
        pcs = stack.enter_context(pcs_process(sim.path))
        _, client = _server(stack, tmp_path / "srv", database_url, sim, pcs, cached=False)
        for _ in range(5):
            refused = _boot(client, sim, nonce=secrets.token_bytes(32))
            assert (refused.status_code, refused.json()["reason"]) == (401, "nonce_unknown")
        # Nothing was fetched (or cached) for those attempts: with the service gone, an
        # honest boot finds no collateral.
        pcs.stop()
        honest = _boot(client, sim)
        assert (honest.status_code, honest.json()["reason"]) == (503, "collateral_unavailable")


def test_a_platform_the_pcs_does_not_know_is_not_asked_about_again(
    tmp_path: Path, database_url: str, sim: SimState
) -> None:
    stranger = SimState.init(tmp_path / "stranger", seed=19, fmspc=bytes.fromhex("00a06f000000"))
    with ExitStack() as stack:
        pcs = stack.enter_context(pcs_process(sim.path))
        _, client = _server(stack, tmp_path / "srv", database_url, sim, pcs, cached=True)
        for _ in range(3):
            refused = _boot(client, stranger)
            assert refused.status_code == 503, refused.text
            assert refused.json()["reason"] == "collateral_unavailable"
        fetches = _wait_until_no_fetch_runs(client)
        assert fetches.get("unknown_platform") == 1
        assert _boot(client, sim).status_code == 200
