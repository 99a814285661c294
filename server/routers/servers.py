"""Fleet endpoints of the Servers API: the registry, runtime attestation and its status.

Every endpoint authenticates the calling miner (sr25519 signature or bearer token) and
only ever shows that miner's servers.
"""

from __future__ import annotations

import functools
import json
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.concurrency import run_in_threadpool

from tdx_boot_attest.server.auth.authenticator import AuthenticatedMiner
from tdx_boot_attest.server.auth.dependency import current_miner
from tdx_boot_attest.server.clock import rfc3339
from tdx_boot_attest.server.context import ServerContext
from tdx_boot_attest.server.db.fleet import RuntimeAttestation
from tdx_boot_attest.server.db.models import BootAttestation
from tdx_boot_attest.server.dependencies import client_ip, get_context
from tdx_boot_attest.server.fleet import registry, runtime
from tdx_boot_attest.server.fleet.schemas import (
    SERVER_ID_MAX_CHARS,
    SERVER_ID_PATTERN,
    AttestationOut,
    AttestationStatusResponse,
    BootAttestationRef,
    GpuOut,
    RuntimeAttestationArgs,
    RuntimeAttestationResponse,
    RuntimeNonceResponse,
    ServerArgs,
    ServerDeleted,
    ServerOut,
)
from tdx_boot_attest.server.fleet.status import AttestationFacts, decide_status
from tdx_boot_attest.server.fleet.store import ServerView
from tdx_boot_attest.server.schemas import ErrorResponse

router = APIRouter(prefix="/servers", tags=["servers"])

Miner = Annotated[AuthenticatedMiner, Depends(current_miner)]
Ctx = Annotated[ServerContext, Depends(get_context)]
ServerIdPath = Annotated[
    str, Path(min_length=1, max_length=SERVER_ID_MAX_CHARS, pattern=SERVER_ID_PATTERN)
]


def _refusals(extra: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    texts = {
        401: "Missing, partial or invalid credentials (unauthenticated)",
        422: "Validation Error",
        **extra,
    }
    return {code: {"model": ErrorResponse, "description": text} for code, text in texts.items()}


_NOT_FOUND = {404: "No such server for this miner"}


@router.post(
    "/",
    status_code=201,
    response_model=ServerOut,
    responses=_refusals(
        {
            403: "No recent successful boot attestation from the host",
            409: "Id taken by another miner, registered differently, or a GPU taken",
        }
    ),
    summary="Create Server",
    description="Register a new server. Links the server to the boot attestation history "
    "of its host IP; by default a successful boot attestation from that IP is required. "
    "The server is bound to that boot's identity key (protocol v2); registering the same "
    "server again binds it to the host's newest accepted boot (after a reboot).",
)
def create_server(args: ServerArgs, miner: Miner, ctx: Ctx) -> ServerOut:
    """Register (or idempotently re-register) a server. Raises Conflict / Forbidden."""
    policy = registry.RegistrationPolicy(
        require_boot_attestation=ctx.settings.registration_requires_boot_attestation,
        boot_window=timedelta(seconds=ctx.settings.registration_boot_window_seconds),
    )
    return _server_out(ctx.fleet_store.register_server(miner.hotkey, args, policy, ctx.clock()))


@router.get(
    "/",
    response_model=list[ServerOut],
    responses=_refusals({}),
    summary="List User Servers",
    description="List all servers of the authenticated miner.",
)
def list_servers(miner: Miner, ctx: Ctx) -> list[ServerOut]:
    """The miner's servers. Raises nothing beyond authentication."""
    return [_server_out(view) for view in ctx.fleet_store.list_servers(miner.hotkey)]


@router.get(
    "/{server_id}",
    response_model=ServerOut,
    responses=_refusals(_NOT_FOUND),
    summary="Get Server Details",
    description="Get details for a specific server.",
)
def get_server(server_id: ServerIdPath, miner: Miner, ctx: Ctx) -> ServerOut:
    """One of the miner's servers. Raises NotFound."""
    return _server_out(ctx.fleet_store.server_view(miner.hotkey, server_id))


@router.delete(
    "/{server_id}",
    response_model=ServerDeleted,
    responses=_refusals(_NOT_FOUND),
    summary="Remove Server",
    description="Remove a server and its pending nonces; its attestation records are kept "
    "for audit, marked as belonging to a deleted server.",
)
def delete_server(server_id: ServerIdPath, miner: Miner, ctx: Ctx) -> ServerDeleted:
    """Delete one of the miner's servers. Raises NotFound."""
    kept = ctx.fleet_store.delete_server(miner.hotkey, server_id, ctx.clock())
    return ServerDeleted(server_id=server_id, deleted=True, runtime_attestations_kept=kept)


@router.get(
    "/{server_id}/nonce",
    response_model=RuntimeNonceResponse,
    responses=_refusals(_NOT_FOUND),
    summary="Get Runtime Nonce",
    description="Generate a single-use nonce for runtime attestation of this server.",
)
def get_runtime_nonce(
    server_id: ServerIdPath,
    miner: Miner,
    ctx: Ctx,
    ip: Annotated[str | None, Depends(client_ip)],
) -> RuntimeNonceResponse:
    """Issue a runtime nonce bound to the server. Raises NotFound."""
    issued = runtime.issue_runtime_nonce(ctx, miner.hotkey, server_id, ip)
    return RuntimeNonceResponse(
        nonce=issued.nonce, expires_at=rfc3339(issued.expires_at), server_id=server_id
    )


@router.post(
    "/{server_id}/attestation",
    response_model=RuntimeAttestationResponse,
    responses=_refusals(
        {
            403: "Attestation refused (reason says why)",
            **_NOT_FOUND,
            503: "No valid collateral (retry after Retry-After seconds)",
        }
    ),
    summary="Verify Runtime Attestation",
    description="Verify runtime attestation with full measurement validation: the nonce "
    "is REPORTDATA[0:32], REPORTDATA[32:64] binds the identity key of the server's boot "
    "and identity_signature proves possession of it (protocol v2), the quote is verified "
    "as at boot and matched against the runtime measurements of the image the server "
    "booted with.",
)
async def post_runtime_attestation(
    server_id: ServerIdPath,
    body: RuntimeAttestationArgs,
    miner: Miner,
    ctx: Ctx,
    ip: Annotated[str | None, Depends(client_ip)],
) -> RuntimeAttestationResponse:
    """Verify the quote; refusals raise ServerError subclasses (the attempt is recorded)."""
    result = await run_in_threadpool(
        functools.partial(
            runtime.attest_runtime,
            event_log_text=body.event_log,
            identity_signature_text=body.identity_signature,
        ),
        ctx,
        miner.hotkey,
        server_id,
        body.quote,
        ip,
    )
    return RuntimeAttestationResponse(
        attestation_id=result.attestation_id,
        verified_at=rfc3339(result.verified_at),
        status="verified",
        image=result.image,
        identity_bound=result.identity_bound,
    )


@router.get(
    "/{server_id}/attestation/status",
    response_model=AttestationStatusResponse,
    responses=_refusals(_NOT_FOUND),
    summary="Get Attestation Status",
    description="Get the current runtime attestation status of a server.",
)
def get_attestation_status(
    server_id: ServerIdPath, miner: Miner, ctx: Ctx
) -> AttestationStatusResponse:
    """The server's attestation status. Raises NotFound."""
    stale_after = runtime.stale_interval(ctx)
    status = ctx.fleet_store.attestation_status(miner.hotkey, server_id)
    server, latest, success = status.server, status.latest, status.last_success
    last_success_at = success.verified_at if success is not None else None
    facts = AttestationFacts(
        latest_verified=None if latest is None else latest.verified,
        last_success_at=last_success_at,
    )
    return AttestationStatusResponse(
        server_id=server.id,
        name=server.name,
        attestation_status=decide_status(facts, ctx.clock(), stale_after),
        last_attestation=_attestation_out(latest) if latest is not None else None,
        last_verified_at=rfc3339(last_success_at) if last_success_at is not None else None,
        stale_after_seconds=int(stale_after.total_seconds()),
        image=server.image_name,
        boot_attestation=_boot_ref(status.boot),
    )


def _attestation_out(row: RuntimeAttestation) -> AttestationOut:
    return AttestationOut(
        attestation_id=row.id,
        verified=row.verified,
        created_at=rfc3339(row.created_at),
        verified_at=rfc3339(row.verified_at) if row.verified_at is not None else None,
        reason=row.reason,
        message=row.message,
        differences=json.loads(row.differences) if row.differences else None,
    )


def _boot_ref(boot: BootAttestation | None) -> BootAttestationRef | None:
    if boot is None:
        return None
    return BootAttestationRef(
        attestation_id=boot.id,
        verified_at=rfc3339(boot.created_at),
        image=boot.image_name,
        client_ip=boot.client_ip,
    )


def _server_out(view: ServerView) -> ServerOut:
    server = view.server
    return ServerOut(
        server_id=server.id,
        name=server.name,
        host=server.host,
        miner_hotkey=server.miner_hotkey,
        created_at=rfc3339(server.created_at),
        image=server.image_name,
        boot_attestation=_boot_ref(view.boot),
        identity_key=server.identity_key,
        gpus=[GpuOut.model_validate(gpu, from_attributes=True) for gpu in server.gpus],
    )
