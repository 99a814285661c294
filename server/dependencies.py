"""FastAPI dependencies: the server context, a database session, the caller's address."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Request
from sqlalchemy.orm import Session

from tdx_boot_attest.server.context import ServerContext
from tdx_boot_attest.server.db.engine import session_scope


def get_context(request: Request) -> ServerContext:
    """The running server's context. Raises nothing."""
    ctx: ServerContext = request.app.state.ctx
    return ctx


async def context_dependency(request: Request) -> ServerContext:
    """``get_context`` as an async dependency (FastAPI runs sync ones on a worker thread)."""
    return get_context(request)


def get_session(request: Request) -> Iterator[Session]:
    """A session committed when the handler returns, rolled back if it raises."""
    ctx: ServerContext = request.app.state.ctx
    with session_scope(ctx.sessions) as session:
        yield session


def peer_address(request: Request) -> str | None:
    """The peer address of the request (uvicorn applies trusted proxy headers). Raises nothing."""
    client = request.scope.get("client")
    return str(client[0]) if client else None


async def client_ip(request: Request) -> str | None:
    """``peer_address`` as an async dependency. Raises nothing."""
    return peer_address(request)
