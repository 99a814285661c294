"""The boot path's database work on plain DBAPI connections from the engine's pool.

A boot reads the active images, then spends its nonce and records the attempt in one
transaction: either both happen or neither does, so an attempt that fails for a
server-side reason (the database stalls, drops the connection, runs out of disk) never
burns the agent's nonce, and an accepted attempt is never without its audit row. Through
SQLAlchemy's Connection these few statements cost more CPU than the database spends on
them, so they run here directly on the pooled sqlite3 / psycopg connection. The SQL is
compiled from the statements server.nonces and the ORM run; timestamps are stored as the
ORM stores them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple, NoReturn

from sqlalchemy import (
    ClauseElement,
    ColumnElement,
    DateTime,
    Engine,
    String,
    Text,
    bindparam,
    cast,
    insert,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from tdx_boot_attest.server.audit import AttemptRecord
from tdx_boot_attest.server.db.base import Base
from tdx_boot_attest.server.db.models import BootAttestation, Image, SpentNonce
from tdx_boot_attest.server.errors import ServerError
from tdx_boot_attest.server.nonces import (
    BOOT_SCOPE,
    CONSUME_STATEMENT,
    LOOK_UP_STATEMENT,
    check_nonce_spendable,
    purge_nonces,
    refuse_unusable_nonce,
)
from tdx_boot_attest.server.policy import ApprovedImage, ImageRecord

_ATTEMPTS = Base.metadata.tables[BootAttestation.__tablename__]
_SPENT = Base.metadata.tables[SpentNonce.__tablename__]
# Each column labelled with its ApprovedImage field: rows are read by name, not position.
_IMAGE_COLUMNS = [getattr(Image, field.name).label(field.name) for field in fields(ApprovedImage)]


@dataclass(frozen=True, slots=True)
class BootAttemptRecord:
    """One boot_attestations row: the shared audit record and what only a boot records."""

    attempt: AttemptRecord
    image_id: int | None
    advisory_ids: str | None
    public_key_sha256: str | None
    kem: str | None
    vm_name: str | None
    bookkeeping: str | None
    latency_ms: float

    @property
    def verdict(self) -> str:
        """``accepted`` or ``refused``, as the verdict column stores it. Raises nothing."""
        return "accepted" if self.attempt.accepted else "refused"

    def refused(self, refusal: ServerError) -> BootAttemptRecord:
        """The same attempt, refused for ``refusal``. Raises nothing."""
        return replace(self, attempt=self.attempt.refused(refusal))

    def row(self) -> dict[str, Any]:
        """Column name -> value of the row (``created_at`` aware). Raises nothing."""
        row = self.attempt.columns()
        row["verdict"] = self.verdict
        for field in fields(self):
            if field.name != "attempt":
                row[field.name] = getattr(self, field.name)
        return row


class _StoredNonce(NamedTuple):
    """A row of the ``nonces`` table, as the spend checks read it."""

    expires_at: datetime
    consumed_at: datetime | None


@dataclass(frozen=True, slots=True)
class NonceSpend:
    """A nonce an attempt will spend when it is recorded.

    ``stored`` nonces were issued into the ``nonces`` table (before boot nonces were
    stateless) and are spent by marking that row; the others by a ``spent_nonces`` row.
    """

    nonce_hex: str
    expires_at: datetime
    stored: bool = False


def _image_unchanged() -> ColumnElement[bool]:
    """The released image is still active, with the sealed passphrase the boot read."""
    return (
        select(Image.id)
        .where(
            Image.id == bindparam("image_id"),
            Image.retired_at.is_(None),
            Image.sealed_passphrase == bindparam("image_sealed_passphrase"),
        )
        .exists()
    )


def _statements(dialect_name: str) -> dict[str, tuple[ClauseElement, list[str] | None]]:
    spend_insert = (postgresql.insert if dialect_name == "postgresql" else sqlite.insert)(_SPENT)
    spend = spend_insert.on_conflict_do_nothing(index_elements=["nonce"])
    statements: dict[str, tuple[ClauseElement, list[str] | None]] = {
        "spend": (spend, ["nonce", "expires_at", "spent_at"]),
        "image_unchanged": (select(_image_unchanged()), None),
        "consume": (CONSUME_STATEMENT, None),
        "look_up": (LOOK_UP_STATEMENT, None),
        "images": (
            select(*_IMAGE_COLUMNS).where(Image.retired_at.is_(None)).order_by(Image.id),
            None,
        ),
        "record": (insert(_ATTEMPTS), [column.name for column in _ATTEMPTS.columns]),
    }
    if dialect_name == "postgresql":
        statements["spend_and_record"] = (_spend_and_record(confirm_image=False), None)
        statements["spend_and_record_image"] = (_spend_and_record(confirm_image=True), None)
    return statements


def _spend_and_record(*, confirm_image: bool) -> ClauseElement:
    """PostgreSQL: spend the nonce and record the attempt in one atomic statement.

    The audit row is inserted from the spend's RETURNING: when the nonce was already
    spent, or (``confirm_image``) the released image was retired or re-keyed since the
    boot read it, neither row is written (rowcount 0). It runs inside an explicit
    transaction all the same (see spend_nonce_and_record).
    """
    spend_values = select(
        bindparam("nonce", type_=_SPENT.c.nonce.type),
        bindparam("expires_at", type_=_SPENT.c.expires_at.type),
        bindparam("spent_at", type_=_SPENT.c.spent_at.type),
    )
    if confirm_image:
        spend_values = spend_values.where(_image_unchanged())
    spent = (
        postgresql.insert(_SPENT)
        .from_select(["nonce", "expires_at", "spent_at"], spend_values)
        .on_conflict_do_nothing(index_elements=["nonce"])
        .returning(_SPENT.c.nonce)
        .cte("spent")
    )
    columns = list(_ATTEMPTS.columns)
    # Explicit casts to varchar(n) would cut long text silently: cast to unbounded text
    # and let the column's own length check apply, as in a plain INSERT.
    values = select(
        *[
            cast(
                bindparam(column.name),
                Text() if isinstance(column.type, String) else column.type,
            ).label(column.name)
            for column in columns
        ]
    ).select_from(spent)
    return insert(_ATTEMPTS).from_select([column.name for column in columns], values)


class BootStore:
    """Read active images, check stored nonces, spend nonces and record attempts."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        # sqlite3 also takes named parameters, so both drivers get a dict of values.
        dialect_class: Any = type(engine.dialect)
        dialect = dialect_class(paramstyle="named") if self._sqlite else engine.dialect
        self._sql = {
            name: str(statement.compile(dialect=dialect, column_keys=columns))
            for name, (statement, columns) in _statements(engine.dialect.name).items()
        }
        self._driver_error: type[Exception] = engine.dialect.loaded_dbapi.Error
        # The dialect's own conversion of a naive UTC datetime (SQLite: its text format).
        self._timestamp_processor = (
            DateTime().dialect_impl(engine.dialect).bind_processor(engine.dialect)
        )

    def timestamp(self, moment: datetime) -> Any:
        """``moment`` as the database stores a UtcDateTime column. Raises ValueError if naive."""
        if moment.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        naive = moment.astimezone(UTC).replace(tzinfo=None)
        processor = self._timestamp_processor
        return naive if processor is None else processor(naive)

    @contextmanager
    def _cursor(self, *, transaction: bool) -> Iterator[Any]:
        """A cursor on a pooled connection: one transaction, or autocommit statements.

        A single statement needs no explicit transaction, which saves a BEGIN and a
        COMMIT round trip. (SQLite connections are always in autocommit mode, see
        server.db.engine, so a transaction there is an explicit BEGIN IMMEDIATE; psycopg's
        autocommit is switched on only while the connection is checked out here.)
        """
        connection = self._engine.raw_connection()
        driver: Any = connection.driver_connection
        try:
            if not self._sqlite:
                driver.autocommit = not transaction
            cursor = connection.cursor()
            try:
                if transaction and self._sqlite:
                    cursor.execute("BEGIN IMMEDIATE")
                try:
                    yield cursor
                except BaseException:
                    if transaction:
                        self._rollback(connection, cursor)
                    raise
                if transaction:
                    if self._sqlite:
                        cursor.execute("COMMIT")
                    else:
                        connection.commit()
            finally:
                cursor.close()
        except self._driver_error:
            # A connection in an unknown state (e.g. broken mid-statement) is not reused.
            connection.invalidate()
            raise
        finally:
            try:
                if not self._sqlite and connection.is_valid:
                    driver.autocommit = False
            finally:
                connection.close()

    def _rollback(self, connection: Any, cursor: Any) -> None:
        try:
            if self._sqlite:
                if connection.driver_connection.in_transaction:
                    cursor.execute("ROLLBACK")
            else:
                connection.rollback()
        except self._driver_error:
            # The connection is broken: the database rolls back on its own.
            connection.invalidate()

    def load_active_images(self) -> list[ApprovedImage]:
        """The images attestations are matched against. Raises the driver's errors."""
        with self._cursor(transaction=False) as cursor:
            cursor.execute(self._sql["images"])
            rows = _named_rows(cursor, cursor.fetchall())
        return [ApprovedImage(**row) for row in rows]

    def look_up_stored_nonce(self, nonce_hex: str, scope: str, now: datetime) -> datetime:
        """The expiry of a nonce issued into the ``nonces`` table, if it can still be spent.

        Reads only. Raises NonceRejected with nonce_unknown, nonce_expired or nonce_used,
        and the driver's errors if the database fails.
        """
        params = {"wanted": nonce_hex, "wanted_scope": scope, "now": self.timestamp(now)}
        with self._cursor(transaction=False) as cursor:
            cursor.execute(self._sql["look_up"], params)
            rows = _named_rows(cursor, cursor.fetchall())
        if not rows:
            refuse_unusable_nonce(None)
        state = _StoredNonce(
            expires_at=self._as_datetime(rows[0]["expires_at"]),
            consumed_at=rows[0]["consumed_at"],
        )
        check_nonce_spendable(state, now)
        return state.expires_at

    def spend_nonce_and_record(
        self,
        spend: NonceSpend,
        record: BootAttemptRecord,
        now: datetime,
        released: ImageRecord | None = None,
    ) -> None:
        """Spend the nonce and insert the attempt's row, in one transaction.

        ``released``: the image whose passphrase the attempt releases; the rows are
        written only if it is still active with the same sealed passphrase (boots match
        against a kept copy of the images, see server.boot.active_images). Exactly one
        attempt can ever spend a nonce, on any replica. Raises NonceRejected (nonce_used)
        when it was already spent, ImageChanged when ``released`` was retired or re-keyed
        meanwhile, and the driver's errors if the database fails; nothing is written then.
        """
        params = self._row_params(record)
        image = {} if released is None else _image_params(released)
        if not spend.stored and "spend_and_record" in self._sql:
            statement = "spend_and_record" if released is None else "spend_and_record_image"
            # One statement, yet an explicit transaction: a statement held up on its way
            # (a stalled network or proxy) and delivered after this server gave up on it
            # must not commit, or the agent's nonce is spent by an attempt that answered
            # 503. Without the COMMIT, which is sent only once the statement's answer
            # came, the database rolls it back when the cut connection closes.
            with self._cursor(transaction=True) as cursor:
                cursor.execute(
                    self._sql[statement],
                    {
                        **params,
                        **image,
                        "nonce": spend.nonce_hex,
                        "expires_at": self.timestamp(spend.expires_at),
                        "spent_at": self.timestamp(now),
                    },
                )
                if cursor.rowcount == 1:
                    return
                # Nothing written: find out why (a rare path, so a second round trip).
                if released is not None and not self._image_unchanged(cursor, image):
                    raise ImageChanged(released.name)
            _refuse_spent(spend, now)
        with self._cursor(transaction=True) as cursor:
            if released is not None and not self._image_unchanged(cursor, image):
                raise ImageChanged(released.name)
            if spend.stored:
                cursor.execute(
                    self._sql["consume"],
                    {
                        "wanted": spend.nonce_hex,
                        "wanted_scope": BOOT_SCOPE,
                        "now": self.timestamp(now),
                    },
                )
                spent = cursor.fetchone() is not None
            else:
                cursor.execute(
                    self._sql["spend"],
                    {
                        "nonce": spend.nonce_hex,
                        "expires_at": self.timestamp(spend.expires_at),
                        "spent_at": self.timestamp(now),
                    },
                )
                spent = cursor.rowcount == 1
            if not spent:
                _refuse_spent(spend, now)
            cursor.execute(self._sql["record"], params)

    def _image_unchanged(self, cursor: Any, image: dict[str, Any]) -> bool:
        cursor.execute(self._sql["image_unchanged"], image)
        row = cursor.fetchone()
        return bool(row is not None and row[0])

    def record_attempt(self, record: BootAttemptRecord) -> None:
        """Insert one boot_attestations row. Raises the driver's errors."""
        with self._cursor(transaction=False) as cursor:
            cursor.execute(self._sql["record"], self._row_params(record))

    def purge_expired_nonces(self, now: datetime) -> int:
        """Delete nonces (stored or spent) long expired; return the count.

        Raises SQLAlchemy errors.
        """
        with self._engine.begin() as conn:
            return purge_nonces(conn, now)

    def _row_params(self, record: BootAttemptRecord) -> dict[str, Any]:
        params = record.row()
        params["created_at"] = self.timestamp(record.attempt.created_at)
        return params

    def _as_datetime(self, value: Any) -> datetime:
        if isinstance(value, str):  # SQLite keeps timestamps as text
            value = datetime.fromisoformat(value)
        moment: datetime = value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


class ImageChanged(Exception):
    """The image a boot matched was retired or re-keyed after the boot read it: nothing
    was written, and the attempt is to be verified again against the images as they are."""


def _image_params(image: ImageRecord) -> dict[str, Any]:
    return {"image_id": image.id, "image_sealed_passphrase": image.sealed_passphrase}


def _refuse_spent(spend: NonceSpend, now: datetime) -> NoReturn:
    """Refuse a nonce another attempt spent first (nonce_used), as every nonce check does."""
    refuse_unusable_nonce(_StoredNonce(expires_at=spend.expires_at, consumed_at=now))


def _named_rows(cursor: Any, rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """The DBAPI rows as column name -> value (names from the cursor's description)."""
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in rows]
