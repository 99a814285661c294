"""Boot nonces without a database write, over real HTTP against real server processes.

Issuing a nonce needs no database (so it is never the bottleneck, and keeps working while
the database is unreachable); replicas that share the database and the master key accept
each other's nonces, each at most once; nobody else's nonces are accepted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tdx_boot_attest.server.db.engine import make_engine, make_sessionmaker, session_scope
from tdx_boot_attest.server.nonces import issue_nonce
from tdx_boot_attest.tdxsim.state import SimState
from tests.support.boot_client import AgentKey, expected_report_data, get_nonce, post_quote
from tests.support.databases import create_postgres_database, drop_postgres_database
from tests.support.live_server import LiveServer, live_server
from tests.support.pg_proxy import pg_proxy

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
PASSPHRASE = b"luks-pw-stateless-2b9e41"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimState:
    return SimState.init(tmp_path_factory.mktemp("sim") / "state", seed=13)


@pytest.fixture
def database_url() -> Iterator[str]:
    url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


def _server(
    stack: ExitStack, workdir: Path, url: str, sim: SimState, **env: str
) -> tuple[LiveServer, httpx.Client]:
    server = stack.enter_context(
        live_server(
            workdir,
            url,
            trust_root=sim.path / "root_ca.der",
            collateral_file=sim.path / "collateral.json",
            extra_env=env,
        )
    )
    client = stack.enter_context(httpx.Client(base_url=server.base_url, timeout=60))
    return server, client


def _add_golden(server: LiveServer, sim: SimState) -> None:
    golden = server.workdir / "golden.quote"
    golden.write_bytes(sim.make_quote(bytes(64)))
    server.add_image("golden", passphrase=PASSPHRASE, quote_file=golden)


def _post(client: httpx.Client, sim: SimState, nonce: bytes) -> httpx.Response:
    key = AgentKey.generate()
    response = post_quote(
        client, sim.make_quote(expected_report_data(nonce, key)), key, nonce.hex()
    )
    if response.status_code == 200:
        assert key.open(response.json()["sealed_key"], nonce) == PASSPHRASE
    return response


def _reason(response: httpx.Response) -> str | None:
    return None if response.status_code == 200 else response.json()["reason"]


def test_nonces_are_issued_while_the_database_is_unreachable(
    tmp_path: Path, database_url: str, sim: SimState
) -> None:
    with ExitStack() as stack:
        proxy = stack.enter_context(pg_proxy(database_url))
        server, client = _server(stack, tmp_path / "srv", proxy.url_for(database_url), sim)
        _add_golden(server, sim)
        assert _post(client, sim, get_nonce(client)).status_code == 200
        proxy.refuse()
        proxy.cut()
        try:
            nonces = [get_nonce(client) for _ in range(20)]
        finally:
            proxy.accept()
        assert len(set(nonces)) == 20
        assert [_reason(_post(client, sim, nonce)) for nonce in nonces[:3]] == [None] * 3


def test_replicas_sharing_database_and_master_key_accept_each_others_nonces_once(
    tmp_path: Path, database_url: str, sim: SimState
) -> None:
    with ExitStack() as stack:
        first, first_client = _server(stack, tmp_path / "a", database_url, sim)
        key_file = first.env["TDX_ATTEST_MASTER_KEY_FILE"]
        _add_golden(first, sim)
        _, second_client = _server(
            stack, tmp_path / "b", database_url, sim, TDX_ATTEST_MASTER_KEY_FILE=key_file
        )
        nonce = get_nonce(first_client)
        assert _reason(_post(second_client, sim, nonce)) is None
        assert _reason(_post(first_client, sim, nonce)) == "nonce_used"
        assert _reason(_post(second_client, sim, nonce)) == "nonce_used"
        nonce = get_nonce(second_client)
        assert _reason(_post(first_client, sim, nonce)) is None


def test_nonces_of_another_master_key_or_database_are_unknown(
    tmp_path: Path, database_url: str, sim: SimState
) -> None:
    other_database = create_postgres_database()
    try:
        with ExitStack() as stack:
            server, client = _server(stack, tmp_path / "a", database_url, sim)
            _add_golden(server, sim)
            key_file = server.env["TDX_ATTEST_MASTER_KEY_FILE"]
            _, stranger = _server(stack, tmp_path / "b", database_url, sim)
            _, elsewhere = _server(
                stack, tmp_path / "c", other_database, sim, TDX_ATTEST_MASTER_KEY_FILE=key_file
            )
            assert _reason(_post(client, sim, get_nonce(stranger))) == "nonce_unknown"
            assert _reason(_post(client, sim, get_nonce(elsewhere))) == "nonce_unknown"
            assert _reason(_post(client, sim, get_nonce(client))) is None
    finally:
        drop_postgres_database(other_database)


def test_a_nonce_stored_before_the_upgrade_is_accepted_once(
    tmp_path: Path, database_url: str, sim: SimState
) -> None:
    with ExitStack() as stack:
        server, client = _server(stack, tmp_path / "srv", database_url, sim)
        _add_golden(server, sim)
        engine = make_engine(database_url, pool_size=1)
        try:
            with session_scope(make_sessionmaker(engine)) as session:
                stored = issue_nonce(session, dt.datetime.now(dt.UTC), 600, "10.0.0.1")
        finally:
            engine.dispose()
        nonce = bytes.fromhex(stored.nonce)
        assert _reason(_post(client, sim, nonce)) is None
        assert _reason(_post(client, sim, nonce)) == "nonce_used"
