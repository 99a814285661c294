"""Nonces: format, TTL, single use under concurrency (both databases), purge."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tdx_boot_attest.server.db.engine import make_engine, make_sessionmaker, session_scope
from tdx_boot_attest.server.db.models import BootAttestation, Nonce, SpentNonce
from tdx_boot_attest.server.errors import NonceRejected
from tdx_boot_attest.server.nonces import (
    PURGE_GRACE,
    check_nonce_spendable,
    consume_nonce,
    issue_nonce,
    purge_nonces,
)
from tdx_boot_attest.tdxsim.state import SimState
from tests.support.boot_client import AgentKey, expected_report_data, get_nonce, post_quote
from tests.support.live_server import live_server

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url, pool_size=60)
    yield make_sessionmaker(engine)
    engine.dispose()


def test_nonce_is_64_hex_and_records_ip(sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as session:
        nonce = issue_nonce(session, NOW, 600, "10.1.2.3")
    assert re.fullmatch(r"[0-9a-f]{64}", nonce.nonce)
    with session_scope(sessions) as session:
        row = session.get(Nonce, nonce.nonce)
        assert row is not None
        assert row.client_ip == "10.1.2.3"
        assert row.expires_at == NOW + dt.timedelta(seconds=600)


def test_consume_once_then_used(sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as session:
        value = issue_nonce(session, NOW, 600, None).nonce
    with session_scope(sessions) as session:
        consume_nonce(session, value, NOW)
    with pytest.raises(NonceRejected) as caught, session_scope(sessions) as session:
        consume_nonce(session, value, NOW)
    assert caught.value.reason == "nonce_used"


def test_expired_and_unknown(sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as session:
        value = issue_nonce(session, NOW, 600, None).nonce
    with pytest.raises(NonceRejected) as caught, session_scope(sessions) as session:
        consume_nonce(session, value, NOW + dt.timedelta(seconds=600))
    assert caught.value.reason == "nonce_expired"
    with pytest.raises(NonceRejected) as caught, session_scope(sessions) as session:
        consume_nonce(session, "00" * 32, NOW)
    assert caught.value.reason == "nonce_unknown"


def test_one_check_words_every_nonce_refusal(sessions: sessionmaker[Session]) -> None:
    """The check the boot store and runtime attestation use refuses as consume_nonce does."""
    with session_scope(sessions) as session:
        used, expired = (issue_nonce(session, NOW, 600, None).nonce for _ in range(2))
        consume_nonce(session, used, NOW)
    cases = {"00" * 32: NOW, used: NOW, expired: NOW + dt.timedelta(seconds=600)}
    for nonce, when in cases.items():
        with session_scope(sessions) as session:
            state = session.get(Nonce, nonce)
            with pytest.raises(NonceRejected) as checked:
                check_nonce_spendable(state, when)
            with pytest.raises(NonceRejected) as consumed:
                consume_nonce(session, nonce, when)
        assert (checked.value.reason, checked.value.message) == (
            consumed.value.reason,
            consumed.value.message,
        )
    with session_scope(sessions) as session:
        fresh = issue_nonce(session, NOW, 600, None).nonce
        check_nonce_spendable(session.get(Nonce, fresh), NOW + dt.timedelta(seconds=599))


def test_concurrent_consumers_exactly_one_wins(sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as session:
        value = issue_nonce(session, NOW, 600, None).nonce

    def consume(_: int) -> str:
        try:
            with session_scope(sessions) as session:
                consume_nonce(session, value, NOW)
        except NonceRejected as exc:
            return exc.reason.value
        return "accepted"

    with ThreadPoolExecutor(max_workers=50) as pool:
        outcomes = Counter(pool.map(consume, range(50)))
    assert outcomes == Counter({"accepted": 1, "nonce_used": 49})


def test_purge_removes_only_long_expired(sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as session:
        old = issue_nonce(session, NOW - PURGE_GRACE - dt.timedelta(hours=1), 600, None).nonce
        fresh = issue_nonce(session, NOW, 600, None).nonce
    with session_scope(sessions) as session:
        assert purge_nonces(session, NOW) == 1
    with session_scope(sessions) as session:
        assert session.get(Nonce, old) is None
        assert session.get(Nonce, fresh) is not None


@pytest.mark.slow
def test_fifty_concurrent_posts_one_nonce_over_http(
    tmp_path: Path, database_url: str, sim: SimState
) -> None:
    """The real server process: 50 simultaneous posts of one nonce, exactly one key release."""
    with live_server(
        tmp_path / "srv",
        database_url,
        trust_root=sim.path / "root_ca.der",
        collateral_file=sim.path / "collateral.json",
    ) as server:
        quote_file = tmp_path / "golden.quote"
        quote_file.write_bytes(sim.make_quote(bytes(64)))
        server.add_image("golden", passphrase=b"luks-pw-concurrency", quote_file=quote_file)
        key = AgentKey.generate()
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            nonce = get_nonce(client)
            quote = sim.make_quote(expected_report_data(nonce, key))
        limits = httpx.Limits(max_connections=50)

        def post(_: int) -> tuple[int, str | None]:
            with httpx.Client(base_url=server.base_url, timeout=60, limits=limits) as client:
                response = post_quote(client, quote, key, nonce.hex())
                return response.status_code, response.json().get("reason")

        with ThreadPoolExecutor(max_workers=50) as pool:
            outcomes = Counter(pool.map(post, range(50)))
        assert outcomes == Counter({(200, None): 1, (401, "nonce_used"): 49}), outcomes
        assert "luks-pw-" not in server.logs()
    engine = make_engine(database_url, pool_size=1)
    with session_scope(make_sessionmaker(engine)) as session:
        assert session.scalars(select(SpentNonce.nonce)).all() == [nonce.hex()]
        accepted = select(func.count()).where(
            BootAttestation.nonce == nonce.hex(), BootAttestation.verdict == "accepted"
        )
        assert session.scalar(accepted) == 1
    engine.dispose()
