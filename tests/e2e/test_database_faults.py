"""The real server on PostgreSQL, with faults made on the path to the database.

The server reaches PostgreSQL through a TCP proxy this test controls (the database
server itself is shared and never touched). Whatever the fault, every request gets an
answer: 503 database_unavailable with Retry-After while the database cannot serve,
never a 500, a hang or a dropped connection, and /healthz answers throughout.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tdx_boot_attest.tdxsim.state import SimState
from tests.support.boot_client import AgentKey, expected_report_data, get_nonce, post_quote
from tests.support.databases import create_postgres_database, drop_postgres_database
from tests.support.live_server import LiveServer, live_server
from tests.support.pg_proxy import PgProxy, pg_proxy

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
PASSPHRASE = b"luks-pw-db-faults-77a0c1"
RETRY_AFTER = "5"
# Bounds on waiting for a state the test made (not on how fast the server is).
STATE_WAIT_SECONDS = 60.0


@dataclass
class Rig:
    """A live server whose database path goes through ``proxy``."""

    server: LiveServer
    proxy: PgProxy
    database_url: str
    client: httpx.Client
    sim: SimState


@dataclass
class PreparedBoot:
    """A nonce, key and quote obtained while the database was healthy."""

    nonce: bytes
    key: AgentKey
    quote: bytes

    def post(self, client: httpx.Client) -> httpx.Response:
        return post_quote(client, self.quote, self.key, self.nonce.hex())


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimState:
    return SimState.init(tmp_path_factory.mktemp("sim") / "state", seed=9)


def _rig(tmp_path: Path, sim: SimState, timeout: int) -> Iterator[Rig]:
    url = create_postgres_database()
    golden = tmp_path / "golden.quote"
    golden.write_bytes(sim.make_quote(bytes(64)))
    try:
        with (
            pg_proxy(url) as proxy,
            live_server(
                tmp_path / "srv",
                proxy.url_for(url),
                trust_root=sim.path / "root_ca.der",
                collateral_file=sim.path / "collateral.json",
                extra_env={
                    "TDX_ATTEST_DATABASE_CONNECT_TIMEOUT_SECONDS": str(timeout),
                    "TDX_ATTEST_DATABASE_STATEMENT_TIMEOUT_SECONDS": str(timeout),
                    "TDX_ATTEST_DATABASE_POOL_TIMEOUT_SECONDS": str(timeout),
                    "TDX_ATTEST_DATABASE_RETRY_AFTER_SECONDS": RETRY_AFTER,
                },
            ) as server,
            httpx.Client(base_url=server.base_url, timeout=120) as client,
        ):
            server.add_image("golden", passphrase=PASSPHRASE, quote_file=golden)
            yield Rig(server, proxy, url, client, sim)
    finally:
        drop_postgres_database(url)


@pytest.fixture
def rig(tmp_path: Path, sim: SimState) -> Iterator[Rig]:
    yield from _rig(tmp_path, sim, timeout=2)


@pytest.fixture
def patient_rig(tmp_path: Path, sim: SimState) -> Iterator[Rig]:
    """The database may take long: requests stay pending while it is stalled."""
    yield from _rig(tmp_path, sim, timeout=120)


def prepare(rig: Rig) -> PreparedBoot:
    key = AgentKey.generate()
    nonce = get_nonce(rig.client)
    return PreparedBoot(nonce, key, rig.sim.make_quote(expected_report_data(nonce, key)))


def complete_boot(rig: Rig) -> httpx.Response:
    return prepare(rig).post(rig.client)


def assert_released(response: httpx.Response, boot: PreparedBoot | None = None) -> None:
    assert response.status_code == 200, response.text
    if boot is not None:
        assert boot.key.open(response.json()["sealed_key"], boot.nonce) == PASSPHRASE


def assert_database_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["reason"] == "database_unavailable"
    assert response.headers["Retry-After"] == RETRY_AFTER
    assert "luks-pw" not in response.text


def wait_until_ready(rig: Rig) -> None:
    """Until /readyz finds the database answering (which also ends failing fast)."""
    wait_for(lambda: rig.client.get("/readyz").status_code == 200, "the server to be ready")


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + STATE_WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def test_stalled_database_gives_503_and_the_nonce_survives(rig: Rig) -> None:
    assert_released(complete_boot(rig))
    boot = prepare(rig)
    rig.proxy.stall()
    try:
        assert_database_unavailable(boot.post(rig.client))
        assert rig.client.get("/healthz").status_code == 200
        ready = rig.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["database"]["state"] == "unavailable"
        # Nonces need no database.
        during = prepare(rig)
    finally:
        rig.proxy.resume()
    wait_until_ready(rig)
    # The attempt the database did not answer spent nothing.
    assert_released(boot.post(rig.client), boot)
    assert_released(during.post(rig.client), during)


def test_liveness_answers_while_requests_wait_on_a_stalled_database(patient_rig: Rig) -> None:
    rig = patient_rig
    assert_released(complete_boot(rig))
    boots = [prepare(rig) for _ in range(4)]
    rig.proxy.stall()
    with ThreadPoolExecutor(max_workers=len(boots)) as pool:
        try:
            pending: list[Future[httpx.Response]] = [
                pool.submit(boot.post, rig.client) for boot in boots
            ]
            # Every attempt is inside the server, waiting on the database.
            wait_for(lambda: rig.proxy.held >= len(boots), "every attempt to reach the database")
            for _ in range(6):
                assert rig.client.get("/healthz", timeout=10).status_code == 200
            ready = rig.client.get("/readyz", timeout=10)
            assert (ready.status_code, ready.json()["status"]) == (503, "not_ready")
            assert not any(future.done() for future in pending)
        finally:
            rig.proxy.resume()
        for boot, future in zip(boots, pending, strict=True):
            assert_released(future.result(), boot)


def test_refused_connections_give_503_then_recover(rig: Rig) -> None:
    assert_released(complete_boot(rig))
    boot = prepare(rig)
    rig.proxy.refuse()
    rig.proxy.cut()
    try:
        assert_database_unavailable(boot.post(rig.client))
        assert rig.client.get("/healthz").status_code == 200
    finally:
        rig.proxy.accept()
    assert_released(boot.post(rig.client), boot)


def _terminate_server_backends(database_url: str) -> int:
    engine = sa.create_engine(sa.make_url(database_url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            terminated = conn.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
            conn.commit()
            return int(terminated)
    finally:
        engine.dispose()


def test_terminated_backends_are_replaced_without_errors(rig: Rig) -> None:
    for _ in range(3):
        assert_released(complete_boot(rig))
        assert _terminate_server_backends(rig.database_url) >= 1
        # The server's pooled connections are now closed by the database.
        wait_for(lambda: rig.proxy.open_connections == 0, "the terminated connections to close")
        for _ in range(3):
            assert_released(complete_boot(rig))


def test_disk_full_gives_503_and_the_nonce_survives(rig: Rig) -> None:
    assert_released(complete_boot(rig))
    boot = prepare(rig)
    rig.proxy.fail_writes()
    try:
        assert_database_unavailable(boot.post(rig.client))
        assert rig.proxy.failed_writes >= 1
    finally:
        rig.proxy.clear_write_failures()
    assert_released(boot.post(rig.client), boot)


def test_an_attempt_whose_row_cannot_be_written_spends_nothing(rig: Rig) -> None:
    """The nonce is spent in the transaction that records the attempt, or not at all."""
    assert_released(complete_boot(rig))
    boot = prepare(rig)
    rig.proxy.fail_writes(table="boot_attestations")
    try:
        assert_database_unavailable(boot.post(rig.client))
        assert rig.proxy.failed_writes >= 1
    finally:
        rig.proxy.clear_write_failures()
    assert_released(boot.post(rig.client), boot)


def _metric(client: httpx.Client, how: str) -> float:
    pattern = rf'^tdx_attest_database_unavailable_total{{how="{how}"}} (\S+)$'
    found = re.search(pattern, client.get("/metrics").text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def test_while_the_database_keeps_requests_waiting_the_rest_fail_fast(rig: Rig) -> None:
    """Requests do not queue behind workers stuck on a stalled database."""
    assert_released(complete_boot(rig))
    boots = [prepare(rig) for _ in range(40)]
    rig.proxy.stall()
    try:
        with ThreadPoolExecutor(max_workers=len(boots)) as pool:
            answers = list(pool.map(lambda boot: boot.post(rig.client), boots))
        for answer in answers:
            assert_database_unavailable(answer)
        assert _metric(rig.client, "tried") >= 1
        assert _metric(rig.client, "failed_fast") >= 1
    finally:
        rig.proxy.resume()
    wait_until_ready(rig)
    for boot in boots[:3]:
        assert_released(boot.post(rig.client), boot)
