"""The boot endpoints' ordinary requests, served without the framework's per-request work.

Every VM of a fleet calls GET /servers/nonce and POST /servers/boot/attestation at boot,
often all at once. For these two, routing, dependency injection and the middleware stack
took about a sixth of the server's CPU per boot in a boot storm. This ASGI layer sits in
front of the application and answers a request to either path itself when it is an
ordinary one: the nonce request, or an attestation with a Content-Length within the body
limit, a JSON content type and a body the route's own model accepts. It calls the same
functions as the routes in server.routers.boot, so the answers are the same, byte for
byte (tests/server/test_boot_fast_path.py compares them). Anything else (a chunked or
oversized body, another content type, a body that does not validate, a client that went
away) is passed on, with what was read of the body, to the application, which answers
it exactly as it always has.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.datastructures import State
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tdx_boot_attest.agent.protocol import BOOT_ATTESTATION_PATH, NONCE_HEADER, NONCE_PATH
from tdx_boot_attest.server.body_limit import replay
from tdx_boot_attest.server.context import ServerContext
from tdx_boot_attest.server.error_responses import refusal_response, unexpected_response
from tdx_boot_attest.server.errors import ServerError
from tdx_boot_attest.server.routers.boot import (
    attest,
    attest_executor,
    boot_request,
    issue_nonce,
)
from tdx_boot_attest.server.schemas import BootAttestationRequest

_NONCE_HEADER = NONCE_HEADER.lower().encode()


class BootFastPath:
    """ASGI layer answering ordinary boot requests itself; the rest go to ``app``."""

    def __init__(self, app: ASGIApp, state: State, body_limit: int) -> None:
        self.app = app
        self._state = state
        self._body_limit = body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            if path == NONCE_PATH and method == "GET":
                await self._nonce(scope, receive, send)
                return
            if path == BOOT_ATTESTATION_PATH and method == "POST":
                await self._attestation(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _nonce(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: ServerContext = self._state.ctx
        try:
            body, purge = await issue_nonce(ctx)
        except ServerError as refusal:
            await refusal_response(refusal)(scope, receive, send)
            return
        except Exception as exc:
            await self._unexpected(ctx, exc)(scope, receive, send)
            return
        await JSONResponse(body)(scope, receive, send)
        if purge is not None:
            # As the route's background task: after the answer, on a worker thread.
            await run_in_threadpool(purge)

    async def _attestation(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _ordinary_headers(scope, self._body_limit)
        if headers is None:
            await self.app(scope, receive, send)
            return
        nonce_header, length = headers
        messages, body = await _read_body(receive, length)
        parsed = _parse(body) if body is not None else None
        if parsed is None:
            await self.app(scope, replay(messages, receive), send)
            return
        ctx: ServerContext = self._state.ctx
        client = scope.get("client")
        boot = boot_request(parsed, nonce_header, str(client[0]) if client else None)
        try:
            answer = await attest(ctx, boot, attest_executor(self._state))
        except ServerError as refusal:
            response = refusal_response(refusal)
        except Exception as exc:
            response = self._unexpected(ctx, exc)
        else:
            response = JSONResponse(answer)
        await response(scope, receive, send)

    def _unexpected(self, ctx: ServerContext, exc: Exception) -> JSONResponse:
        return unexpected_response(exc, ctx.settings.database_retry_after_seconds)


def _ordinary_headers(scope: Scope, body_limit: int) -> tuple[str | None, int] | None:
    """The nonce header and Content-Length of an ordinary attestation request, or None
    when the application must decide (no or repeated length, over the limit, not JSON)."""
    length: int | None = None
    json_body = False
    nonce: str | None = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            if length is not None or not value.isdigit():
                return None
            length = int(value)
        elif name == b"content-type":
            json_body = value.split(b";", 1)[0].strip().lower() == b"application/json"
        elif name == _NONCE_HEADER and nonce is None:
            nonce = value.decode("latin-1")
    if length is None or length > body_limit or not json_body:
        return None
    return nonce, length


async def _read_body(receive: Receive, length: int) -> tuple[list[Message], bytes | None]:
    """The messages received and the whole body; the body is None when the client went
    away or sent other than ``length`` bytes (the application then answers)."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    return messages, body if len(body) == length else None


def _parse(body: bytes) -> BootAttestationRequest | None:
    """The body as the route's model, decoded as the framework decodes it; None when the
    application must answer (not JSON, not an object, or not valid for the model)."""
    try:
        document: Any = json.loads(body)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    try:
        return BootAttestationRequest.model_validate(document)
    except ValidationError:
        return None
