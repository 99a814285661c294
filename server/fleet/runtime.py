"""Runtime attestation: numbered steps from request to verdict, every attempt recorded.

The quote is verified exactly as at boot (the boot path's pipeline is called, not
copied), held against the identity key of the boot the server is bound to (protocol v2:
REPORTDATA[32:64] binds the key, ``identity_signature`` proves possession of it; see
server.identity_binding), and then matched against the runtime measurement set of the
image the server booted with. The nonce comes from REPORTDATA[0:32] and must have been
issued for this server.
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from tdx_boot_attest.agent.eventlog import Event
from tdx_boot_attest.agent.protocol import NONCE_BYTES, Reason
from tdx_boot_attest.server.audit import AttemptRecord, attempt_record
from tdx_boot_attest.server.boot.attestation import (
    decode_quote,
    log_attestation,
    verify_quote_platform,
)
from tdx_boot_attest.server.context import ServerContext
from tdx_boot_attest.server.db.fleet import Server
from tdx_boot_attest.server.db.models import Image
from tdx_boot_attest.server.dcap import DcapVerdict
from tdx_boot_attest.server.errors import AttestationRefused, Forbidden, NonceRejected, ServerError
from tdx_boot_attest.server.event_evidence import (
    EventLogEvidence,
    check_replay,
    decode_event_log_field,
    parse_event_log_field,
)
from tdx_boot_attest.server.fleet.registry import runtime_nonce_scope
from tdx_boot_attest.server.identity_binding import check_runtime_binding, require_runtime_binding
from tdx_boot_attest.server.nonces import check_nonce_spendable
from tdx_boot_attest.server.policy import differing_registers, mismatch_refusal, runtime_profile
from tdx_boot_attest.server.quote import TdQuote, parse_td_quote


@dataclass(frozen=True, slots=True)
class RuntimeNonce:
    """A runtime nonce issued for one server."""

    nonce: str
    expires_at: datetime
    server_id: str


@dataclass(frozen=True, slots=True)
class RuntimeResult:
    """An accepted runtime attestation."""

    attestation_id: str
    verified_at: datetime
    image: str
    identity_bound: bool


@dataclass(slots=True)
class _Attempt:
    id: str
    identity_key: str | None = None
    nonce: str | None = None
    quote_raw: bytes | None = None
    quote: TdQuote | None = None
    dcap: DcapVerdict | None = None
    image: str | None = None
    event_log_raw: bytes | None = None
    event_log: EventLogEvidence | None = None
    # Set once the nonce is known good: it is then spent with the attempt's row.
    spends_nonce: bool = False


def issue_runtime_nonce(
    ctx: ServerContext, miner: str, server_id: str, client_ip: str | None
) -> RuntimeNonce:
    """A single-use nonce bound to the miner's server. Raises NotFound for another's server."""
    row = ctx.fleet_store.issue_runtime_nonce(
        miner, server_id, ctx.clock(), ctx.settings.nonce_ttl_seconds, client_ip
    )
    ctx.metrics.nonces_issued.labels("runtime").inc()
    return RuntimeNonce(nonce=row.nonce, expires_at=row.expires_at, server_id=server_id)


def attest_runtime(
    ctx: ServerContext,
    miner: str,
    server_id: str,
    quote_text: str,
    client_ip: str | None,
    *,
    event_log_text: str | None = None,
    identity_signature_text: str | None = None,
) -> RuntimeResult:
    """Verify a runtime quote of the miner's server; record the attempt either way.

    Raises NotFound for a server that is not the miner's (nothing recorded), a
    ServerError subclass whose ``reason`` says why the attestation was refused, and
    DatabaseUnavailable when the attempt cannot be recorded (its nonce is then unspent).
    """
    started = time.perf_counter()
    now = ctx.clock()
    server = ctx.fleet_store.get_server(miner, server_id)
    attempt = _Attempt(id=str(uuid.uuid4()))
    try:
        result = _run_steps(
            ctx,
            server,
            quote_text=quote_text,
            event_log_text=event_log_text,
            identity_signature_text=identity_signature_text,
            client_ip=client_ip,
            now=now,
            attempt=attempt,
        )
    except ServerError as refusal:
        _finish(
            ctx,
            server,
            client_ip=client_ip,
            attempt=attempt,
            now=now,
            started=started,
            refusal=refusal,
        )
        raise
    _finish(
        ctx, server, client_ip=client_ip, attempt=attempt, now=now, started=started, refusal=None
    )
    return result


def _run_steps(
    ctx: ServerContext,
    server: Server,
    *,
    quote_text: str,
    event_log_text: str | None,
    identity_signature_text: str | None,
    client_ip: str | None,
    now: datetime,
    attempt: _Attempt,
) -> RuntimeResult:
    # Input checks and the binding's presence come before the nonce is spent; the quote's
    # contents (REPORTDATA included) are trusted only once DCAP has verified it.
    _step1_check_caller(server, client_ip, ctx.settings.runtime_attestation_require_host_ip)
    attempt.quote_raw = decode_quote(quote_text)
    if event_log_text is not None:
        attempt.event_log_raw = decode_event_log_field(event_log_text)
        attempt.event_log = parse_event_log_field(attempt.event_log_raw)
    quote = parse_td_quote(attempt.quote_raw)
    attempt.quote = quote
    binding = require_runtime_binding(
        server.id,
        server.identity_key,
        identity_signature_text,
        required=ctx.settings.runtime_attestation_require_identity,
    )
    attempt.identity_key = binding.identity_key.hex() if binding is not None else None
    attempt.nonce = quote.report_data[:NONCE_BYTES].hex()
    _step2_check_server_nonce(ctx, server.id, attempt.nonce, now)
    attempt.spends_nonce = True
    attempt.dcap = verify_quote_platform(ctx, quote, now)
    if attempt.event_log is not None:
        check_replay(attempt.event_log, quote)
    if binding is not None:
        check_runtime_binding(binding, quote)
    image = _step3_booted_image(ctx, server)
    attempt.image = image.name
    events = attempt.event_log.log.events if attempt.event_log is not None else None
    _step4_match_runtime_measurements(quote, image, events)
    return RuntimeResult(
        attestation_id=attempt.id,
        verified_at=now,
        image=image.name,
        identity_bound=binding is not None,
    )


def _step1_check_caller(server: Server, client_ip: str | None, required: bool) -> None:
    if not required:
        return
    if client_ip is None or not _same_address(client_ip, server.host):
        raise Forbidden(
            f"runtime attestation of server {server.id} must come from its host "
            f"{server.host}, not {client_ip or 'an unknown address'}"
        )


def _same_address(left: str, right: str) -> bool:
    try:
        a, b = ipaddress.ip_address(left), ipaddress.ip_address(right)
    except ValueError:
        return False
    # An IPv4 peer seen through a dual-stack socket arrives as ::ffff:a.b.c.d.
    a = getattr(a, "ipv4_mapped", None) or a
    b = getattr(b, "ipv4_mapped", None) or b
    return a == b


def _step2_check_server_nonce(
    ctx: ServerContext, server_id: str, nonce: str, now: datetime
) -> None:
    """Refuse a nonce that is another server's, unknown, expired or used; spend nothing.

    Checked before verification, which may fetch collateral; the nonce is spent with the
    attempt's row (see _finish).
    """
    scope = runtime_nonce_scope(server_id)
    row = ctx.fleet_store.stored_nonce(nonce)
    is_boot_nonce = row is None and ctx.boot_nonce_keys().expiry_of(bytes.fromhex(nonce))
    if is_boot_nonce or (row is not None and row.scope != scope):
        raise AttestationRefused(
            f"the nonce in REPORTDATA[0:32] was not issued for server {server_id}",
            Reason.NONCE_MISMATCH,
        )
    check_nonce_spendable(row, now)


def _step3_booted_image(ctx: ServerContext, server: Server) -> Image:
    image = ctx.fleet_store.image(server.image_id) if server.image_id is not None else None
    if image is None or image.retired_at is not None:
        raise AttestationRefused(
            f"server {server.id} has no approved boot image on record "
            f"({server.image_name or 'none'}); it cannot be matched at runtime",
            Reason.NO_IMAGE_REGISTERED,
        )
    return image


def _step4_match_runtime_measurements(
    quote: TdQuote, image: Image, events: Sequence[Event] | None
) -> None:
    differing = differing_registers(quote, runtime_profile(image))
    if differing:
        raise mismatch_refusal(differing, image, events, every_image=False)


def _finish(
    ctx: ServerContext,
    server: Server,
    *,
    client_ip: str | None,
    attempt: _Attempt,
    now: datetime,
    started: float,
    refusal: ServerError | None,
) -> None:
    record = attempt_record(
        attempt_id=attempt.id,
        now=now,
        refusal=refusal,
        client_ip=client_ip,
        nonce=attempt.nonce,
        image_name=attempt.image or server.image_name,
        quote_raw=attempt.quote_raw,
        quote=attempt.quote,
        dcap=attempt.dcap,
        event_log_raw=attempt.event_log_raw,
        identity_key=attempt.identity_key,
    )
    try:
        # Spent in the transaction that records the attempt, or not at all.
        ctx.fleet_store.record_runtime_attempt(record, server, spend_nonce=attempt.spends_nonce)
    except NonceRejected as used:
        refused = record.refused(used)
        ctx.fleet_store.record_runtime_attempt(refused, server, spend_nonce=False)
        _count_and_log(ctx, refused, client_ip, started)
        raise
    _count_and_log(ctx, record, client_ip, started)


def _count_and_log(
    ctx: ServerContext, record: AttemptRecord, client_ip: str | None, started: float
) -> None:
    latency = time.perf_counter() - started
    verdict = "accepted" if record.accepted else "refused"
    reason = record.reason
    ctx.metrics.attestations.labels("runtime", verdict, reason or "").inc()
    ctx.metrics.attestation_latency.labels("runtime").observe(latency)
    log_attestation(
        "runtime",
        verdict=verdict,
        reason=reason,
        image=record.image_name,
        client_ip=client_ip,
        latency_seconds=latency,
        attestation_id=record.id,
    )


def stale_interval(ctx: ServerContext) -> timedelta:
    """How old the last success may be before the status is ``stale``. Raises nothing."""
    return timedelta(seconds=ctx.settings.runtime_attestation_stale_seconds)
