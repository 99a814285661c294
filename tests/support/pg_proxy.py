"""A TCP proxy between a server under test and PostgreSQL, which a test breaks on purpose.

The machine's PostgreSQL is shared and never touched: faults are made here, on the path.

* ``refuse()`` / ``accept()``: close the listening socket (connections are refused), then
  listen again on the same port;
* ``stall()`` / ``resume()``: stop forwarding bytes in both directions, on open and new
  connections (a database that stopped answering), then deliver what was held;
* ``cut()``: close every open connection (the server sees EOF);
* ``reset()``: abort every open connection (the server sees a TCP reset);
* ``fail_writes(sqlstate, message)`` / ``clear_write_failures()``: answer every statement
  that changes data (INSERT, UPDATE, DELETE) with a PostgreSQL error, as a database whose
  disk is full does, without forwarding it. This reads the frontend/backend protocol
  (v3, unencrypted: give the client ``sslmode=disable``).

The proxy runs an asyncio loop on a background thread; every control call is thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa

# Requests a client may send before its startup message; the server answers each with one
# byte (no message frame).
_PRE_STARTUP_CODES = {80877103, 80877104}  # SSLRequest, GSSENCRequest
_WRITE_VERBS = ("INSERT", "UPDATE", "DELETE")
DISK_FULL = ("53100", 'could not extend file "base/1/2": No space left on device')

_T = TypeVar("_T")


@dataclass(eq=False)
class _Session:
    """One proxied connection and what the protocol reader knows about it."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    statements: dict[bytes, str] = field(default_factory=dict)
    portals: dict[bytes, bytes] = field(default_factory=dict)
    # The transaction status of the last ReadyForQuery from the server: I, T or E.
    status: bytes = b"I"
    # SSLRequest / GSSENCRequest sent and not yet answered (each answer is one byte).
    unframed_answers: int = 0


class PgProxy:
    """A fault-injecting TCP proxy to ``upstream_host:upstream_port`` on 127.0.0.1."""

    def __init__(self, upstream_host: str = "127.0.0.1", upstream_port: int = 5432) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._sessions: set[_Session] = set()
        self._write_failure: tuple[str, str] | None = None
        self._write_table: str | None = None
        self.failed_writes = 0
        # Messages that arrived while stalled (counted when they start waiting).
        self.held = 0

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> PgProxy:
        """Listen on a free port. Raises OSError when it cannot listen."""
        self._thread.start()
        self._call(self._resume())
        self._call(self._listen())
        return self

    def stop(self) -> None:
        """Close everything and stop the loop thread. Raises nothing."""
        with contextlib.suppress(Exception):
            self._call(self._close_listener())
            self._call(self._resume())
            self._call(self._close_sessions(abort=True))
            self._call(self._drain_tasks())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> PgProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def url_for(self, database_url: str) -> str:
        """``database_url`` pointed at the proxy, unencrypted (so write faults can be made)."""
        url = sa.make_url(database_url).set(host="127.0.0.1", port=self.port)
        url = url.update_query_dict({"sslmode": "disable", "gssencmode": "disable"})
        return url.render_as_string(hide_password=False)

    # -- faults ------------------------------------------------------------------------------
    def refuse(self) -> None:
        """Stop listening: new connections are refused until accept()."""
        self._call(self._close_listener())

    def accept(self) -> None:
        """Listen again on the same port."""
        self._call(self._listen())

    def stall(self) -> None:
        """Hold every byte in both directions (new connections too) until resume()."""
        self._call(self._stall())

    def resume(self) -> None:
        """Deliver what was held and forward again."""
        self._call(self._resume())

    def cut(self) -> int:
        """Close every open connection; returns how many there were."""
        return self._call(self._close_sessions(abort=False))

    def reset(self) -> int:
        """Abort every open connection with a TCP reset; returns how many there were."""
        return self._call(self._close_sessions(abort=True))

    def fail_writes(
        self,
        sqlstate: str = DISK_FULL[0],
        message: str = DISK_FULL[1],
        *,
        table: str | None = None,
    ) -> None:
        """Answer every INSERT/UPDATE/DELETE (on ``table`` only, if given) with an error."""
        self._write_failure = (sqlstate, message)
        self._write_table = table

    def clear_write_failures(self) -> None:
        """Forward data-changing statements again."""
        self._write_failure = None

    @property
    def open_connections(self) -> int:
        """Connections currently proxied."""
        return len(self._sessions)

    # -- loop side ---------------------------------------------------------------------------
    def _call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=30)

    async def _listen(self) -> int:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._serve, "127.0.0.1", self.port, reuse_address=True
            )
            self.port = self._server.sockets[0].getsockname()[1]
        return 0

    async def _close_listener(self) -> int:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        return 0

    async def _drain_tasks(self) -> int:
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return len(tasks)

    async def _stall(self) -> int:
        self._flowing.clear()
        return 0

    async def _resume(self) -> int:
        self._flowing.set()
        return 0

    async def _close_sessions(self, *, abort: bool) -> int:
        sessions = list(self._sessions)
        for session in sessions:
            for writer in (session.client, session.upstream):
                if abort:
                    sock = writer.get_extra_info("socket")
                    if sock is not None:
                        with contextlib.suppress(OSError):
                            sock.setsockopt(
                                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                            )
                    writer.transport.abort()
                else:
                    writer.close()
        self._sessions.clear()
        return len(sessions)

    async def _serve(self, client_in: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        try:
            upstream_in, upstream = await asyncio.open_connection(*self.upstream)
        except OSError:
            client.transport.abort()
            return
        session = _Session(client, upstream)
        self._sessions.add(session)
        pumps = [
            asyncio.ensure_future(self._client_to_server(session, client_in)),
            asyncio.ensure_future(self._server_to_client(session, upstream_in)),
        ]
        try:
            # Either side ending (EOF, reset, a fault) ends the connection.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for pump in pumps:
                with contextlib.suppress(
                    asyncio.CancelledError, OSError, asyncio.IncompleteReadError
                ):
                    await pump
            self._sessions.discard(session)
            for writer in (client, upstream):
                writer.transport.abort()

    async def _forward(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if not self._flowing.is_set():
            self.held += 1
        await self._flowing.wait()
        writer.write(data)
        await writer.drain()

    async def _client_to_server(self, session: _Session, reader: asyncio.StreamReader) -> None:
        # Untyped startup-phase messages: length-prefixed, with a request code.
        while True:
            length = struct.unpack("!I", await reader.readexactly(4))[0]
            body = await reader.readexactly(length - 4)
            if struct.unpack("!I", body[:4])[0] in _PRE_STARTUP_CODES:
                session.unframed_answers += 1
                await self._forward(session.upstream, struct.pack("!I", length) + body)
                continue
            await self._forward(session.upstream, struct.pack("!I", length) + body)
            break
        batch: list[tuple[bytes, bytes]] = []
        while True:
            kind = await reader.readexactly(1)
            length = struct.unpack("!I", await reader.readexactly(4))[0]
            payload = await reader.readexactly(length - 4)
            batch.append((kind, payload))
            # Extended-protocol messages go out with their Sync; Query and the rest alone.
            if kind in {b"P", b"B", b"D", b"E", b"C", b"H"}:
                continue
            await self._send_batch(session, batch)
            batch = []

    async def _send_batch(self, session: _Session, batch: list[tuple[bytes, bytes]]) -> None:
        failure = self._write_failure
        if failure is not None and self._writes_data(session, batch):
            self.failed_writes += 1
            status = b"E" if session.status in {b"T", b"E"} else b"I"
            await self._forward(session.client, _error_response(*failure) + _ready(status))
            return
        self._learn(session, batch)
        await self._forward(
            session.upstream,
            b"".join(k + struct.pack("!I", len(p) + 4) + p for k, p in batch),
        )

    def _writes_data(self, session: _Session, batch: list[tuple[bytes, bytes]]) -> bool:
        statements = dict(session.statements)
        portals = dict(session.portals)
        for kind, payload in batch:
            if kind == b"Q" and self._targeted(_cstrings(payload)[0]):
                return True
            if kind == b"P":
                name, query = _cstrings(payload)[:2]
                statements[name.encode()] = query
            elif kind == b"B":
                portal, statement = _cstrings(payload)[:2]
                portals[portal.encode()] = statement.encode()
            elif kind == b"E":
                executed = _cstrings(payload)[0].encode()
                if self._targeted(statements.get(portals.get(executed, b""), "")):
                    return True
        return False

    def _targeted(self, query: str) -> bool:
        table = self._write_table
        return _is_write(query) and (table is None or table in query)

    @staticmethod
    def _learn(session: _Session, batch: list[tuple[bytes, bytes]]) -> None:
        for kind, payload in batch:
            if kind == b"P":
                name, query = _cstrings(payload)[:2]
                session.statements[name.encode()] = query
            elif kind == b"B":
                portal, statement = _cstrings(payload)[:2]
                session.portals[portal.encode()] = statement.encode()

    async def _server_to_client(self, session: _Session, reader: asyncio.StreamReader) -> None:
        # Answers to SSLRequest / GSSENCRequest are one byte; everything else is framed.
        while True:
            first = await reader.readexactly(1)
            if session.unframed_answers:
                session.unframed_answers -= 1
                if first != b"N":
                    raise OSError("the client negotiated encryption: use url_for()")
                await self._forward(session.client, first)
                continue
            length = struct.unpack("!I", await reader.readexactly(4))[0]
            payload = await reader.readexactly(length - 4)
            if first == b"Z":
                session.status = payload[:1]
            await self._forward(session.client, first + struct.pack("!I", length) + payload)


def _cstrings(payload: bytes) -> list[str]:
    return [part.decode("utf-8", "replace") for part in payload.split(b"\x00")]


def _is_write(query: str) -> bool:
    # Also a data-changing statement inside a WITH, or after other clauses.
    words = set(re.findall(r"[A-Z]+", query.upper()))
    return bool(words & set(_WRITE_VERBS))


def _error_response(sqlstate: str, message: str) -> bytes:
    fields = b"".join(
        code + value.encode() + b"\x00"
        for code, value in ((b"S", "ERROR"), (b"V", "ERROR"), (b"C", sqlstate), (b"M", message))
    )
    body = fields + b"\x00"
    return b"E" + struct.pack("!I", len(body) + 4) + body


def _ready(status: bytes) -> bytes:
    return b"Z" + struct.pack("!I", 5) + status


@contextlib.contextmanager
def pg_proxy(upstream_url: str) -> Iterator[PgProxy]:
    """A running proxy to the PostgreSQL server of ``upstream_url``."""
    url = sa.make_url(upstream_url)
    with PgProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        yield proxy
