"""The boot path's DBAPI statements: same rows as the ORM, spend and record as one."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from typing import Any

import pytest
from sqlalchemy import Engine, String, cast, func, select
from sqlalchemy.orm import Session, sessionmaker

from tdx_boot_attest.agent.protocol import Reason
from tdx_boot_attest.server.audit import AttemptRecord
from tdx_boot_attest.server.boot.store import (
    BootAttemptRecord,
    BootStore,
    ImageChanged,
    NonceSpend,
)
from tdx_boot_attest.server.db.engine import make_engine, make_sessionmaker, session_scope
from tdx_boot_attest.server.db.models import BootAttestation, Image, Nonce, SpentNonce
from tdx_boot_attest.server.errors import NonceRejected
from tdx_boot_attest.server.nonces import BOOT_SCOPE, consume_nonce, issue_nonce, purge_nonces

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


def _row(**values: Any) -> BootAttemptRecord:
    """An accepted attempt's record; ``values`` set any column (audit or boot-only)."""
    shared: dict[str, Any] = {field.name: None for field in fields(AttemptRecord)}
    shared.update(id=str(uuid.uuid4()), created_at=NOW)
    own: dict[str, Any] = {
        field.name: None for field in fields(BootAttemptRecord) if field.name != "attempt"
    }
    own["latency_ms"] = 1.0
    for name, value in values.items():
        (shared if name in shared else own)[name] = value
    return BootAttemptRecord(attempt=AttemptRecord(**shared), **own)


def _spend(expires_in: int = 600) -> NonceSpend:
    return NonceSpend(secrets.token_hex(32), NOW + dt.timedelta(seconds=expires_in))


def _count(sessions: sessionmaker[Session], model: type[Any]) -> int:
    with session_scope(sessions) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_active_images_in_order(engine: Engine, sessions: sessionmaker[Session]) -> None:
    first = _add_image(sessions, "first")
    _add_image(sessions, "retired", retired=True)
    second = _add_image(sessions, "second")
    images = BootStore(engine).load_active_images()
    assert [(image.id, image.name) for image in images] == [(first, "first"), (second, "second")]
    assert images[0].sealed_passphrase == b"\x01sealed"
    assert (images[0].mrconfigid, images[0].mrowner) == (None, "bb" * 48)
    assert images[0].runtime_rtmr2 == "any"


def test_spend_and_record_write_both_rows(engine: Engine, sessions: sessionmaker[Session]) -> None:
    spend = _spend()
    row = _row(nonce=spend.nonce_hex, quote=b"\x04\x00quote", advisory_ids=json.dumps(["SA-1"]))
    BootStore(engine).spend_nonce_and_record(spend, row, NOW)
    with session_scope(sessions) as session:
        spent = session.get(SpentNonce, spend.nonce_hex)
        assert spent is not None
        assert (spent.expires_at, spent.spent_at) == (spend.expires_at, NOW)
        stored = session.get(BootAttestation, row.attempt.id)
        assert stored is not None
        assert stored.created_at == NOW
        assert (stored.nonce, stored.quote, stored.advisory_ids) == (
            spend.nonce_hex,
            b"\x04\x00quote",
            '["SA-1"]',
        )


@pytest.mark.parametrize("change", ["retired", "rekeyed"])
@pytest.mark.parametrize("stored", [False, True])
def test_a_released_image_changed_since_it_was_read_stops_the_spend(
    engine: Engine, sessions: sessionmaker[Session], change: str, stored: bool
) -> None:
    store = BootStore(engine)
    image_id = _add_image(sessions, "golden")
    (image,) = store.load_active_images()
    first = _spend()
    store.spend_nonce_and_record(first, _row(nonce=first.nonce_hex), NOW, image)
    with session_scope(sessions) as session:
        row = session.get(Image, image_id)
        assert row is not None
        if change == "retired":
            row.retired_at = NOW
        else:
            row.sealed_passphrase = b"\x01resealed"
    if stored:
        with session_scope(sessions) as session:
            nonce_hex = issue_nonce(session, NOW, 600, None).nonce
        spend = NonceSpend(nonce_hex, NOW + dt.timedelta(seconds=600), stored=True)
    else:
        spend = _spend()
    second = _row(nonce=spend.nonce_hex)
    with pytest.raises(ImageChanged):
        store.spend_nonce_and_record(spend, second, NOW, image)
    with session_scope(sessions) as session:
        assert session.get(BootAttestation, second.attempt.id) is None
    assert _count(sessions, SpentNonce) == 1
    # The nonce is still there to be spent by the same attempt verified again.
    store.spend_nonce_and_record(spend, second, NOW)


def test_a_spent_nonce_cannot_be_spent_again_and_writes_nothing(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    store = BootStore(engine)
    spend = _spend()
    store.spend_nonce_and_record(spend, _row(), NOW)
    second = _row()
    with pytest.raises(NonceRejected) as caught:
        store.spend_nonce_and_record(spend, second, NOW)
    assert caught.value.reason == "nonce_used"
    with session_scope(sessions) as session:
        assert session.get(BootAttestation, second.attempt.id) is None


def test_a_failed_record_does_not_spend_the_nonce(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    store = BootStore(engine)
    spend = _spend()
    taken = _row()
    store.record_attempt(taken)
    # Same row id: the insert fails inside the transaction, after the spend.
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        store.spend_nonce_and_record(spend, _row(id=taken.attempt.id), NOW)
    with session_scope(sessions) as session:
        assert session.get(SpentNonce, spend.nonce_hex) is None
    # The nonce is still good, and the pool still hands out usable connections.
    store.spend_nonce_and_record(spend, _row(), NOW)
    assert _count(sessions, SpentNonce) == 1


def test_concurrent_spenders_exactly_one_wins(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    store = BootStore(engine)
    spend = _spend()

    def attempt(_: int) -> str:
        try:
            store.spend_nonce_and_record(spend, _row(), NOW)
        except NonceRejected as exc:
            return exc.reason.value
        return "accepted"

    with ThreadPoolExecutor(max_workers=50) as pool:
        outcomes = Counter(pool.map(attempt, range(50)))
    assert outcomes == Counter({"accepted": 1, "nonce_used": 49})
    assert _count(sessions, BootAttestation) == 1


def test_stored_nonces_are_looked_up_then_spent(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    """Nonces issued into the nonces table (before stateless nonces) still work once."""
    store = BootStore(engine)
    with session_scope(sessions) as session:
        value = issue_nonce(session, NOW, 600, None).nonce
        other_scope = issue_nonce(session, NOW, 600, None, scope="runtime:srv").nonce
    expires_at = store.look_up_stored_nonce(value, BOOT_SCOPE, NOW)
    assert expires_at == NOW + dt.timedelta(seconds=600)
    store.spend_nonce_and_record(NonceSpend(value, expires_at, stored=True), _row(), NOW)
    cases = {
        (value, NOW): "nonce_used",
        ("00" * 32, NOW): "nonce_unknown",
        (other_scope, NOW): "nonce_unknown",
    }
    with session_scope(sessions) as session:
        fresh = issue_nonce(session, NOW, 600, None).nonce
    cases[(fresh, NOW + dt.timedelta(seconds=600))] = "nonce_expired"
    for (nonce, when), reason in cases.items():
        with pytest.raises(NonceRejected) as caught:
            store.look_up_stored_nonce(nonce, BOOT_SCOPE, when)
        assert caught.value.reason == reason
    with pytest.raises(NonceRejected) as caught:
        store.spend_nonce_and_record(NonceSpend(value, expires_at, stored=True), _row(), NOW)
    assert caught.value.reason == "nonce_used"
    # The ORM path sees the stored nonce consumed too.
    with pytest.raises(NonceRejected), session_scope(sessions) as session:
        consume_nonce(session, value, NOW)


def test_timestamps_are_stored_as_the_orm_stores_them(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    # SQLite compares timestamps as text: a whole second must keep its ".000000".
    whole_second = NOW.replace(microsecond=0)
    via_store = _row(created_at=whole_second)
    BootStore(engine).record_attempt(via_store)
    with session_scope(sessions) as session:
        via_orm = BootAttestation(**_row(created_at=whole_second).row())
        session.add(via_orm)
        orm_id = via_orm.id
    with engine.connect() as conn:
        stored = dict(
            conn.execute(
                select(BootAttestation.id, cast(BootAttestation.created_at, String)).where(
                    BootAttestation.id.in_([via_store.attempt.id, orm_id])
                )
            ).all()
        )
    assert stored[via_store.attempt.id] == stored[orm_id]


def test_purge_removes_long_expired_spent_nonces(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    store = BootStore(engine)
    old, fresh = _spend(expires_in=-3 * 3600), _spend()
    store.spend_nonce_and_record(old, _row(), NOW)
    store.spend_nonce_and_record(fresh, _row(), NOW)
    with session_scope(sessions) as session:
        assert purge_nonces(session, NOW) == 1
    with session_scope(sessions) as session:
        assert session.scalars(select(SpentNonce.nonce)).all() == [fresh.nonce_hex]
        assert session.scalar(select(func.count()).select_from(Nonce)) == 0


def test_active_images_match_the_orm_field_by_field(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    image_id = _add_image(sessions, "only")
    (loaded,) = BootStore(engine).load_active_images()
    with session_scope(sessions) as session:
        orm = session.get(Image, image_id)
        assert orm is not None
        expected = {field.name: getattr(orm, field.name) for field in fields(loaded)}
    assert {field.name: getattr(loaded, field.name) for field in fields(loaded)} == expected


def test_the_store_purges_long_expired_nonces(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    store = BootStore(engine)
    old, fresh = _spend(expires_in=-3 * 3600), _spend()
    store.spend_nonce_and_record(old, _row(), NOW)
    store.spend_nonce_and_record(fresh, _row(), NOW)
    assert store.purge_expired_nonces(NOW) == 1
    assert store.purge_expired_nonces(NOW) == 0
    with session_scope(sessions) as session:
        assert session.scalars(select(SpentNonce.nonce)).all() == [fresh.nonce_hex]


def test_a_record_names_every_column_of_the_table() -> None:
    row = _row(reason=None).row()
    assert set(row) == {column.name for column in BootAttestation.__table__.columns}
    assert row["verdict"] == "accepted"
    refused = _row().refused(NonceRejected("nonce has already been used", Reason.NONCE_USED))
    assert refused.row()["verdict"] == "refused"
    assert (refused.attempt.reason, refused.attempt.message) == (
        "nonce_used",
        "nonce has already been used",
    )
