"""ASGI middleware refusing request bodies over a size limit (declared or streamed)."""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tdx_boot_attest.agent.protocol import Reason
from tdx_boot_attest.server.errors import error_body


class BodyLimit:
    """Answers 422 (quote_too_large on attestation paths) for bodies over ``limit`` bytes.

    A body without Content-Length (chunked) is read here, up to the limit, before the
    application sees any of it: a body over the limit is refused by this middleware
    itself rather than surfacing as an error inside the application's body parsing.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(scope, receive, send)
            return
        if declared is not None:
            # The server stops at Content-Length, so the body cannot outgrow the check.
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away: let the application see the disconnect.
                await self.app(scope, replay([message], receive), send)
                return
            body = message.get("body", b"")
            received += len(body)
            if received > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, replay([whole], receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        reason = Reason.QUOTE_TOO_LARGE if path.endswith("attestation") else Reason.REQUEST_INVALID
        response = JSONResponse(
            error_body(reason, f"request body is larger than {self.limit} bytes"),
            status_code=422,
            # The rest of the body is not read: the connection cannot be reused.
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


def replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive callable that yields ``messages`` first, then defers to ``receive``."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
