"""Boot path: GET /servers/nonce and POST /servers/boot/attestation (no authentication)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask
from starlette.datastructures import State

from tdx_boot_attest.agent.protocol import (
    BOOT_ATTESTATION_PATH,
    NONCE_HEADER,
    NONCE_PATH,
    b64encode,
)
from tdx_boot_attest.server.boot.attestation import BootRequest, BootResult, attest_boot
from tdx_boot_attest.server.clock import rfc3339
from tdx_boot_attest.server.context import ServerContext
from tdx_boot_attest.server.db.availability import database_unavailable
from tdx_boot_attest.server.dependencies import get_context, peer_address
from tdx_boot_attest.server.errors import DatabaseUnavailable, ServerError
from tdx_boot_attest.server.schemas import (
    BootAttestationRequest,
    BootAttestationResponse,
    ErrorResponse,
    NonceResponse,
)

router = APIRouter(tags=["boot"])
LOG = logging.getLogger("tdx_attest.server")
# Worker threads verifying attestations at once, per process. Verification is CPU under
# one interpreter lock: more threads only contend for it (each handover costs CPU), a few
# overlap the database round trips. Requests beyond wait their turn in order.
ATTEST_THREADS = 8
_PROTOCOL_FIELDS = frozenset({"quote", "public_key", "kem", "event_log", "identity_key"})

REFUSALS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        401: "Nonce missing, unknown, expired or already used",
        403: "Attestation refused (reason says why)",
        422: "Validation Error",
        503: "No valid collateral, or the database is unavailable (retry after Retry-After "
        "seconds)",
    }.items()
}


@router.get(
    NONCE_PATH,
    response_model=NonceResponse,
    summary="Get Nonce",
    description="Generate a nonce for boot attestation. No authentication required.",
)
async def get_nonce(
    request: Request,
) -> JSONResponse:
    """Issue a single-use nonce (no database write: see server.boot.nonces).

    Raises DatabaseUnavailable (503) only while the nonce key's salt cannot be read, the
    first time a process issues a nonce.
    """
    ctx = get_context(request)
    body, purge = await issue_nonce(ctx)
    return JSONResponse(body, background=BackgroundTask(purge) if purge is not None else None)


async def issue_nonce(ctx: ServerContext) -> tuple[dict[str, str], Callable[[], None] | None]:
    """A fresh boot nonce's answer body, and the purge of expired nonces to run (on a
    worker thread) once the answer is sent, when one is due.

    Raises DatabaseUnavailable (503) only while the nonce key's salt cannot be read.
    """
    now = ctx.clock()
    # Database work never runs on the event loop: a database that stops answering must
    # not stop this process from answering anything else (/healthz, other requests).
    keys = ctx.boot_nonces
    if keys is None:
        keys = await run_in_threadpool(ctx.boot_nonce_keys)
    nonce = keys.issue(now, ctx.settings.nonce_ttl_seconds)
    ctx.metrics.nonces_issued.labels("boot").inc()
    purge = partial(_purge_expired_nonces, ctx, now) if _purge_due(ctx, now) else None
    return {"nonce": nonce.hex, "expires_at": rfc3339(nonce.expires_at)}, purge


def _attest(ctx: ServerContext, boot: BootRequest) -> BootResult:
    """attest_boot on a worker thread, telling the database gate how the database did.

    Checked when the request gets its worker: requests queued behind workers that a
    stalled database held are answered at once.
    """
    if not ctx.database_gate.admit():
        ctx.metrics.database_unavailable.labels("failed_fast").inc()
        raise database_unavailable(ctx.settings.database_retry_after_seconds)
    started = time.monotonic()
    try:
        result = attest_boot(ctx, boot)
    except DatabaseUnavailable:
        ctx.metrics.database_unavailable.labels("tried").inc()
        ctx.database_gate.failed(time.monotonic() - started)
        raise
    except ServerError:
        # Refused, and recorded: the database served the attempt.
        ctx.database_gate.succeeded()
        raise
    ctx.database_gate.succeeded()
    return result


def attest_executor(state: State) -> ThreadPoolExecutor:
    """The worker threads boot attestations share in this process (made on first use).

    A plain executor: an attestation is handed over with less work on the event loop
    than through anyio's thread helpers, and waits its turn in order. Raises nothing.
    """
    executor: ThreadPoolExecutor | None = getattr(state, "attest_executor", None)
    if executor is None:
        executor = state.attest_executor = ThreadPoolExecutor(
            ATTEST_THREADS, thread_name_prefix="attest"
        )
    return executor


def _purge_due(ctx: ServerContext, now: datetime) -> bool:
    last = ctx.last_nonce_purge
    return last is None or now - last >= timedelta(
        seconds=ctx.settings.nonce_purge_interval_seconds
    )


def _purge_expired_nonces(ctx: ServerContext, now: datetime) -> None:
    """Delete long-expired nonces, after the answer is sent (a worker thread).

    A failure is logged and tried again at the next interval. Raises nothing.
    """
    ctx.last_nonce_purge = now
    try:
        ctx.boot_store.purge_expired_nonces(now)
    except Exception as exc:
        LOG.warning("purging expired nonces failed: %s", type(exc).__name__)


@router.post(
    BOOT_ATTESTATION_PATH,
    response_model=BootAttestationResponse,
    responses=REFUSALS,
    summary="Verify Boot Attestation",
    description="Verify boot attestation and return the LUKS passphrase sealed to the "
    "agent's one-time HPKE key.",
)
async def post_boot_attestation(
    body: BootAttestationRequest,
    request: Request,
    x_chutes_nonce: Annotated[str | None, Header(alias=NONCE_HEADER)] = None,
) -> JSONResponse:
    """Verify the quote and release the sealed key; refusals raise ServerError subclasses."""
    boot = boot_request(body, x_chutes_nonce, peer_address(request))
    answer = await attest(get_context(request), boot, attest_executor(request.app.state))
    return JSONResponse(answer)


def boot_request(
    body: BootAttestationRequest, nonce_header: str | None, client_ip: str | None
) -> BootRequest:
    """The attestation request from its validated body, nonce header and peer address;
    fields beyond the protocol's are bookkeeping. Raises nothing."""
    bookkeeping = {
        key: value
        for key, value in body.model_dump().items()
        if key not in _PROTOCOL_FIELDS and value is not None
    }
    return BootRequest(
        nonce_header=nonce_header,
        quote=body.quote,
        public_key=body.public_key,
        kem=body.kem,
        client_ip=client_ip,
        bookkeeping=bookkeeping,
        event_log=body.event_log,
        identity_key=body.identity_key,
    )


async def attest(
    ctx: ServerContext, boot: BootRequest, executor: ThreadPoolExecutor
) -> dict[str, str]:
    """Verify ``boot`` on a worker thread; the answer body of an accepted attestation.

    Raises the ServerError subclass of a refusal (DatabaseUnavailable included).
    """
    # Database work and collateral fetches block: never on the event loop.
    result = await asyncio.get_running_loop().run_in_executor(executor, _attest, ctx, boot)
    return {
        "attestation_id": result.attestation_id,
        "image": result.image,
        "verified_at": rfc3339(result.verified_at),
        "sealed_key": b64encode(result.sealed_key),
    }
