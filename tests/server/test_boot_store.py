"""The boot path's DBAPI statements: same rows as the ORM, single use under concurrency."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, String, cast, select
from sqlalchemy.orm import Session, sessionmaker

from server.boot_store import BootStore
from server.db.engine import make_engine, make_sessionmaker, session_scope
from server.db.models import BootAttestation, Image, Nonce
from server.errors import NonceRejected
from server.nonces import BOOT_SCOPE, consume_nonce, issue_nonce, new_nonce

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, pool_size=60)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


def _add_image(sessions: sessionmaker[Session], name: str, *, retired: bool = False) -> int:
    with session_scope(sessions) as session:
        image = Image(
            name=name,
            mrtd="aa" * 48,
            boot_rtmr0="00" * 48,
            boot_rtmr1="01" * 48,
            boot_rtmr2="02" * 48,
            boot_rtmr3="03" * 48,
            runtime_rtmr0="00" * 48,
            runtime_rtmr1="01" * 48,
            runtime_rtmr2="any",
            runtime_rtmr3="03" * 48,
            mrconfigid=None,
            mrowner="bb" * 48,
            sealed_passphrase=b"\x01sealed",
            created_at=NOW,
            retired_at=NOW if retired else None,
        )
        session.add(image)
        session.flush()
        return image.id


def test_issued_nonce_reads_back_through_the_orm(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    nonce = new_nonce(NOW, 600, "10.0.0.7")
    BootStore(engine).issue_nonce(nonce)
    with session_scope(sessions) as session:
        row = session.get(Nonce, nonce.nonce)
        assert row is not None
        assert (row.scope, row.client_ip, row.consumed_at) == (BOOT_SCOPE, "10.0.0.7", None)
        assert row.created_at == NOW
        assert row.expires_at == NOW + dt.timedelta(seconds=600)
    # The ORM path accepts what the boot path stored, and the other way round.
    with session_scope(sessions) as session:
        consume_nonce(session, nonce.nonce, NOW)
    with pytest.raises(NonceRejected) as caught:
        BootStore(engine).consume_nonce_and_load_images(nonce.nonce, BOOT_SCOPE, NOW)
    assert caught.value.reason == "nonce_used"


def test_consume_reasons_and_active_images_in_order(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    store = BootStore(engine)
    first = _add_image(sessions, "first")
    _add_image(sessions, "retired", retired=True)
    second = _add_image(sessions, "second")
    with session_scope(sessions) as session:
        value = issue_nonce(session, NOW, 600, None).nonce
    images = store.consume_nonce_and_load_images(value, BOOT_SCOPE, NOW)
    assert [(image.id, image.name) for image in images] == [(first, "first"), (second, "second")]
    assert images[0].sealed_passphrase == b"\x01sealed"
    assert (images[0].mrconfigid, images[0].mrowner) == (None, "bb" * 48)
    assert images[0].runtime_rtmr2 == "any"
    with session_scope(sessions) as session:
        row = session.get(Nonce, value)
        assert row is not None and row.consumed_at == NOW
    fresh = new_nonce(NOW, 600, None)
    store.issue_nonce(fresh)
    expected = {
        (fresh.nonce, NOW + dt.timedelta(seconds=600)): "nonce_expired",
        (fresh.nonce, NOW + dt.timedelta(seconds=601)): "nonce_expired",
        ("00" * 32, NOW): "nonce_unknown",
        (value, NOW): "nonce_used",
    }
    for (nonce, when), reason in expected.items():
        with pytest.raises(NonceRejected) as caught:
            store.consume_nonce_and_load_images(nonce, BOOT_SCOPE, when)
        assert caught.value.reason == reason
    with pytest.raises(NonceRejected) as caught:
        store.consume_nonce_and_load_images(fresh.nonce, "runtime:other", NOW)
    assert caught.value.reason == "nonce_unknown"


def test_concurrent_consumers_exactly_one_wins(engine: Engine) -> None:
    store = BootStore(engine)
    nonce = new_nonce(NOW, 600, None)
    store.issue_nonce(nonce)

    def consume(_: int) -> str:
        try:
            store.consume_nonce_and_load_images(nonce.nonce, BOOT_SCOPE, NOW)
        except NonceRejected as exc:
            return exc.reason.value
        return "accepted"

    with ThreadPoolExecutor(max_workers=50) as pool:
        outcomes = Counter(pool.map(consume, range(50)))
    assert outcomes == Counter({"accepted": 1, "nonce_used": 49})


def test_recorded_attempt_reads_back_through_the_orm(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    image_id = _add_image(sessions, "golden")
    row = {column.name: None for column in BootAttestation.__table__.columns}
    row.update(
        id="0f0e0d0c-0000-4000-8000-000000000001",
        created_at=NOW,
        verdict="accepted",
        image_id=image_id,
        image_name="golden",
        quote=b"\x04\x00quote",
        advisory_ids=json.dumps(["INTEL-SA-1"]),
        latency_ms=2.5,
    )
    BootStore(engine).record_attempt(row)
    with session_scope(sessions) as session:
        stored = session.get(BootAttestation, row["id"])
        assert stored is not None
        assert stored.created_at == NOW
        assert (stored.verdict, stored.image_id, stored.quote) == (
            "accepted",
            image_id,
            b"\x04\x00quote",
        )
        assert (stored.advisory_ids, stored.latency_ms, stored.reason) == (
            '["INTEL-SA-1"]',
            2.5,
            None,
        )


def test_timestamps_are_stored_as_the_orm_stores_them(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    # SQLite compares timestamps as text: a whole second must keep its ".000000".
    whole_second = NOW.replace(microsecond=0)
    via_store = new_nonce(whole_second, 600, None)
    BootStore(engine).issue_nonce(via_store)
    with session_scope(sessions) as session:
        via_orm = issue_nonce(session, whole_second, 600, None)
    with engine.connect() as conn:
        stored = dict(
            conn.execute(
                select(Nonce.nonce, cast(Nonce.created_at, String)).where(
                    Nonce.nonce.in_([via_store.nonce, via_orm.nonce])
                )
            ).all()
        )
    assert stored[via_store.nonce] == stored[via_orm.nonce]


def test_failed_statement_rolls_back_and_returns_the_connection(engine: Engine) -> None:
    store = BootStore(engine)
    nonce = new_nonce(NOW, 600, None)
    store.issue_nonce(nonce)
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        store.issue_nonce(nonce)
    # The pool still hands out usable connections afterwards.
    other = new_nonce(NOW, 600, None)
    store.issue_nonce(other)
    assert store.consume_nonce_and_load_images(other.nonce, BOOT_SCOPE, NOW) == []
