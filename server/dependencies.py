"""FastAPI dependencies: the server context and the caller's address."""

from __future__ import annotations

from fastapi import Request

from tdx_boot_attest.server.context import ServerContext


def get_context(request: Request) -> ServerContext:
    """The running server's context. Raises nothing."""
    ctx: ServerContext = request.app.state.ctx
    return ctx


def peer_address(request: Request) -> str | None:
    """The peer address of the request (uvicorn applies trusted proxy headers). Raises nothing."""
    client = request.scope.get("client")
    return str(client[0]) if client else None


async def client_ip(request: Request) -> str | None:
    """``peer_address`` as an async dependency. Raises nothing."""
    return peer_address(request)
