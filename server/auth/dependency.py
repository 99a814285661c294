"""The FastAPI dependency that authenticates the calling miner.

Declaring the four headers here puts them in the OpenAPI document of every fleet
endpoint, as the Servers API contract lists them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Header, Request

from tdx_boot_attest.agent.protocol import (
    HOTKEY_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    SIGNATURE_SCOPE_HEADER,
)
from tdx_boot_attest.server.auth.authenticator import (
    AuthenticatedMiner,
    Authenticator,
    RequestTarget,
)
from tdx_boot_attest.server.auth.credentials import AUTHORIZATION_HEADER, parse_credentials
from tdx_boot_attest.server.context import ServerContext
from tdx_boot_attest.server.db.engine import session_scope
from tdx_boot_attest.server.dependencies import get_context
from tdx_boot_attest.server.fleet.miners import DatabaseMiners, DatabaseReplayGuard


async def raw_body(request: Request) -> bytes:
    """The request body exactly as received (what the signature covers). Raises nothing."""
    return await request.body()


def replay_guard(request: Request) -> DatabaseReplayGuard:
    """The application's replay store (one per app, so its purge schedule is shared)."""
    guard: DatabaseReplayGuard | None = getattr(request.app.state, "replay_guard", None)
    if guard is None:
        ctx = get_context(request)
        guard = DatabaseReplayGuard(ctx.sessions, ctx.clock)
        request.app.state.replay_guard = guard
    return guard


def request_target(request: Request) -> RequestTarget:
    """The method and path (with ``?query``) a request-scope signature covers.

    The path is the one on the request line, still percent-encoded, as the client sent it.
    Raises nothing.
    """
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else request.url.path
    query = request.scope.get("query_string") or b""
    if query:
        path += "?" + query.decode("latin-1")
    return RequestTarget(method=request.method, path=path)


def current_miner(
    *,
    ctx: Annotated[ServerContext, Depends(get_context)],
    target: Annotated[RequestTarget, Depends(request_target)],
    body: Annotated[bytes, Depends(raw_body)],
    replays: Annotated[DatabaseReplayGuard, Depends(replay_guard)],
    x_chutes_hotkey: Annotated[
        str | None, Header(alias=HOTKEY_HEADER, description="SS58 sr25519 hotkey of the miner")
    ] = None,
    x_chutes_signature: Annotated[
        str | None,
        Header(
            alias=SIGNATURE_HEADER,
            description='Hex sr25519 signature of "{hotkey}:{nonce}:{sha256(body) or tee}" '
            '(with X-Attest-Signature-Scope: request, followed by ":{METHOD}:{path}")',
        ),
    ] = None,
    x_attest_signature_scope: Annotated[
        str | None,
        Header(
            alias=SIGNATURE_SCOPE_HEADER,
            description="body (default, the Chutes form) or request: the signature also "
            "covers the method and path",
        ),
    ] = None,
    x_chutes_nonce: Annotated[
        str | None, Header(alias=NONCE_HEADER, description="Unix time in seconds of signing")
    ] = None,
    authorization: Annotated[
        str | None,
        Header(alias=AUTHORIZATION_HEADER, description="Bearer <API token> (instead of signing)"),
    ] = None,
) -> AuthenticatedMiner:
    """The authenticated miner. Raises AuthenticationError (401) naming what is wrong."""
    credentials = parse_credentials(
        x_chutes_hotkey, x_chutes_nonce, x_chutes_signature, authorization, x_attest_signature_scope
    )
    with session_scope(ctx.sessions) as session:
        authenticator = Authenticator(
            DatabaseMiners(session),
            replays,
            ctx.clock,
            window=timedelta(seconds=ctx.settings.auth_window_seconds),
            require_request_scope=ctx.settings.auth_require_request_scope,
        )
        return authenticator.authenticate(credentials, body, target)
