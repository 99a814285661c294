"""A scripted HTTP server on loopback for client tests: canned answers, recorded requests."""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    """A canned answer: status, JSON body (or raw bytes) and extra headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None


Responder = Callable[[Request], Answer]


class ScriptedServer:
    """Answers each request with the next scripted answer for its (method, path).

    A scripted entry is an Answer or a function of the Request returning one; when a
    route's script runs out, its last entry keeps answering.
    """

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._routes: dict[tuple[str, str], deque[Answer | Responder]] = {}
        self._last: dict[tuple[str, str], Answer | Responder] = {}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``. Raises RuntimeError before start."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def script(self, method: str, path: str, *answers: Answer | Responder) -> None:
        """Queue ``answers`` for ``method path``. Raises nothing."""
        with self._lock:
            self._routes.setdefault((method, path), deque()).extend(answers)

    def _next(self, request: Request) -> Answer:
        key = (request.method, request.path)
        with self._lock:
            queue = self._routes.get(key)
            if queue:
                entry = queue.popleft()
                self._last[key] = entry
            elif key in self._last:
                entry = self._last[key]
            else:
                return Answer(404, {"detail": "not scripted", "reason": "not_found"})
        return entry(request) if callable(entry) else entry

    @contextmanager
    def running(self) -> Iterator[ScriptedServer]:
        """Serve on an ephemeral loopback port for the duration of the block."""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(self.command, self.path, dict(self.headers.items()), body)
                with outer._lock:
                    outer.requests.append(request)
                answer = outer._next(request)
                payload = answer.raw if answer.raw is not None else json.dumps(answer.body).encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = _handle
            do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        thread.start()
        try:
            yield self
        finally:
            self._httpd.shutdown()
            self._httpd.server_close()
            thread.join()
