"""The boot path's database work on plain DBAPI connections from the engine's pool.

Every boot runs four short statements (issue a nonce; spend it; read the policy; record
the attempt). Through SQLAlchemy's Connection, each in its own BEGIN/COMMIT, they cost
more CPU than the database spends on them, so the boot path runs the same statements
here directly on the pooled sqlite3 / psycopg connection. The SQL is compiled from the
statements server.nonces and the ORM run; timestamps are stored as the ORM stores them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ClauseElement, DateTime, Engine, insert, select

from agent.protocol import Reason
from server.db.base import Base
from server.db.models import BootAttestation, Image, Nonce
from server.errors import NonceRejected
from server.nonces import CONSUME_STATEMENT, LOOK_UP_STATEMENT, IssuedNonce
from server.policy import APPROVED_IMAGE_COLUMNS, ApprovedImage

_NONCES = Base.metadata.tables[Nonce.__tablename__]
_ATTEMPTS = Base.metadata.tables[BootAttestation.__tablename__]
# The statements server.nonces and the ORM run, compiled once per engine below.
_STATEMENTS: dict[str, tuple[ClauseElement, list[str] | None]] = {
    "issue": (insert(_NONCES), ["nonce", "scope", "created_at", "expires_at", "client_ip"]),
    "consume": (CONSUME_STATEMENT, None),
    "look_up": (LOOK_UP_STATEMENT, None),
    "images": (
        select(*APPROVED_IMAGE_COLUMNS).where(Image.retired_at.is_(None)).order_by(Image.id),
        None,
    ),
    "record": (insert(_ATTEMPTS), [column.name for column in _ATTEMPTS.columns]),
}


class BootStore:
    """Issue and spend boot nonces, read active images, record attempts."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        # sqlite3 also takes named parameters, so both drivers get a dict of values.
        dialect_class: Any = type(engine.dialect)
        dialect = dialect_class(paramstyle="named") if self._sqlite else engine.dialect
        self._sql = {
            name: str(statement.compile(dialect=dialect, column_keys=columns))
            for name, (statement, columns) in _STATEMENTS.items()
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
    def _autocommit(self) -> Iterator[Any]:
        """A cursor on a pooled connection where every statement is its own transaction.

        Each statement here is atomic by itself, so none needs an explicit transaction:
        that saves a BEGIN and a COMMIT round trip per statement. (SQLite connections are
        always in autocommit mode, see server.db.engine; psycopg's is switched on only
        while the connection is checked out.)
        """
        connection = self._engine.raw_connection()
        driver: Any = connection.driver_connection
        try:
            if not self._sqlite:
                driver.autocommit = True
            cursor = connection.cursor()
            try:
                yield cursor
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

    def issue_nonce(self, nonce: IssuedNonce) -> None:
        """Store a fresh nonce. Raises the driver's errors if the database fails."""
        params = {
            "nonce": nonce.nonce,
            "scope": nonce.scope,
            "created_at": self.timestamp(nonce.created_at),
            "expires_at": self.timestamp(nonce.expires_at),
            "client_ip": nonce.client_ip,
        }
        with self._autocommit() as cursor:
            cursor.execute(self._sql["issue"], params)

    def consume_nonce_and_load_images(
        self, nonce_hex: str, scope: str, now: datetime
    ) -> list[ApprovedImage]:
        """Mark the nonce used (exactly one caller ever succeeds), then read active images.

        The conditional UPDATE is committed by itself before the caller verifies anything,
        so every replica sees the nonce spent; the policy is read right after it (as a
        READ COMMITTED transaction would). Raises NonceRejected with nonce_unknown, nonce_expired or
        nonce_used, and the driver's errors if the database fails.
        """
        params = {"wanted": nonce_hex, "wanted_scope": scope, "now": self.timestamp(now)}
        with self._autocommit() as cursor:
            cursor.execute(self._sql["consume"], params)
            if cursor.fetchone() is None:
                cursor.execute(self._sql["look_up"], params)
                _raise_for_unusable(cursor.fetchone())
            cursor.execute(self._sql["images"])
            rows = cursor.fetchall()
        return [ApprovedImage(*row) for row in rows]

    def record_attempt(self, row: Mapping[str, Any]) -> None:
        """Insert one boot_attestations row (``created_at`` aware). Raises the driver's errors."""
        params = dict(row)
        params["created_at"] = self.timestamp(row["created_at"])
        with self._autocommit() as cursor:
            cursor.execute(self._sql["record"], params)


def _raise_for_unusable(row: tuple[Any, ...] | None) -> None:
    if row is None:
        raise NonceRejected("nonce was not issued by this server", Reason.NONCE_UNKNOWN)
    if row[1] is not None:
        raise NonceRejected("nonce has already been used", Reason.NONCE_USED)
    raise NonceRejected("nonce has expired; request a new one", Reason.NONCE_EXPIRED)
