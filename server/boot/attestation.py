"""The boot attestation: numbered steps from request to sealed key, every attempt recorded."""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn

import dcap_qvl

from tdx_boot_attest.agent.eventlog import Event
from tdx_boot_attest.agent.protocol import (
    MAX_QUOTE_BYTES,
    NONCE_HEADER,
    Kem,
    ProtocolError,
    Reason,
    b64decode,
    check_boot_report_data,
    nonce_from_hex,
    parse_kem,
)
from tdx_boot_attest.server.audit import attempt_record
from tdx_boot_attest.server.bookkeeping import NO_BOOKKEEPING, Bookkeeping, check_bookkeeping
from tdx_boot_attest.server.boot.key_release import HpkePublicKey, load_public_key, seal_for_agent
from tdx_boot_attest.server.boot.store import BootAttemptRecord, ImageChanged, NonceSpend
from tdx_boot_attest.server.context import ServerContext
from tdx_boot_attest.server.db.availability import unavailable_as_503
from tdx_boot_attest.server.dcap import DcapVerdict, verify_dcap
from tdx_boot_attest.server.errors import (
    AttestationRefused,
    DatabaseUnavailable,
    ImagesChanging,
    NonceRejected,
    RequestInvalid,
    ServerError,
)
from tdx_boot_attest.server.event_evidence import (
    EventLogEvidence,
    check_replay,
    decode_event_log_field,
    parse_event_log_field,
)
from tdx_boot_attest.server.identity_binding import decode_identity_key
from tdx_boot_attest.server.nonces import BOOT_SCOPE
from tdx_boot_attest.server.platform_policy import check_platform_policy
from tdx_boot_attest.server.policy import ApprovedImage, ImageRecord, match_image
from tdx_boot_attest.server.quote import TdQuote, parse_td_quote

ATTESTATION_LOG = logging.getLogger("tdx_attest.attestation")
# Rounds of verification an attempt gets while the image it matches keeps being retired or
# re-keyed under it (each round reads the images afresh).
IMAGE_ROUNDS = 3
# Base64 of MAX_QUOTE_BYTES, plus padding: longer text is refused before decoding.
MAX_QUOTE_BASE64_CHARS = 4 * ((MAX_QUOTE_BYTES + 2) // 3)


@dataclass(frozen=True, slots=True)
class BootRequest:
    """A boot attestation request as received (unvalidated strings)."""

    nonce_header: str | None
    quote: str
    public_key: str
    kem: str
    client_ip: str | None
    bookkeeping: dict[str, Any] = field(default_factory=dict)
    event_log: str | None = None
    # Protocol v2: the per-boot identity key (standard base64), bound into REPORTDATA.
    identity_key: str | None = None


@dataclass(frozen=True, slots=True)
class BootResult:
    """An accepted boot attestation."""

    attestation_id: str
    image: str
    verified_at: datetime
    sealed_key: bytes


@dataclass(slots=True)
class _Attempt:
    """What is learnt about an attempt as the steps run, for the audit row and the log."""

    id: str
    nonce: str | None = None
    quote_raw: bytes | None = None
    quote: TdQuote | None = None
    public_key_sha256: str | None = None
    kem: str | None = None
    dcap: DcapVerdict | None = None
    image: ImageRecord | None = None
    event_log_raw: bytes | None = None
    event_log: EventLogEvidence | None = None
    identity_key: bytes | None = None
    bookkeeping: Bookkeeping = NO_BOOKKEEPING
    # Set once the attempt gets past the input checks and the collateral lookup: the
    # nonce is then spent in the transaction that records the attempt.
    spend: NonceSpend | None = None


def attest_boot(ctx: ServerContext, request: BootRequest) -> BootResult:
    """Verify a boot attestation and release the image's passphrase sealed to the agent.

    Blocking (database, collateral fetches): call it on a worker thread. Raises a
    ServerError subclass whose ``reason`` says why it was refused; DatabaseUnavailable
    when the database cannot record the attempt (nothing is then released).
    """
    started = time.perf_counter()
    now = ctx.clock()
    attempt_id = str(uuid.uuid4())
    try:
        with unavailable_as_503(ctx.settings.database_retry_after_seconds):
            for _ in range(IMAGE_ROUNDS):
                attempt = _Attempt(id=attempt_id)
                try:
                    return _attest_and_record(ctx, request, attempt, now=now, started=started)
                except ImageChanged:
                    # Retired or re-keyed since this process read it; nothing was written:
                    # verify again against the images as they are now.
                    ctx.active_images.forget()
            return _refuse_images_changing(ctx, request, attempt, now=now, started=started)
    except DatabaseUnavailable as unavailable:
        _count_and_log(ctx, request, None, started=started, refusal=unavailable)
        raise


def _refuse_images_changing(
    ctx: ServerContext, request: BootRequest, attempt: _Attempt, *, now: datetime, started: float
) -> NoReturn:
    """The matched image changed in every round: record the refusal, spend nothing."""
    attempt.spend = None
    refusal = ImagesChanging(
        "the approved images changed while this boot was being verified; retry", retry_after=1
    )
    _finish(ctx, request, attempt, now=now, started=started, refusal=refusal)
    raise refusal


def _attest_and_record(
    ctx: ServerContext, request: BootRequest, attempt: _Attempt, *, now: datetime, started: float
) -> BootResult:
    try:
        result = _run_steps(ctx, request, now, attempt)
    except DatabaseUnavailable:
        raise
    except ServerError as refusal:
        _finish(ctx, request, attempt, now=now, started=started, refusal=refusal)
        raise
    _finish(ctx, request, attempt, now=now, started=started, refusal=None)
    return result


def _run_steps(
    ctx: ServerContext,
    request: BootRequest,
    now: datetime,
    attempt: _Attempt,
) -> BootResult:
    # Input checks and the collateral lookup come before the nonce is spent, so a retry
    # after a malformed request or missing collateral can reuse it. The quote's contents
    # (attributes, measurements, REPORTDATA) are trusted only once DCAP has verified it.
    attempt.bookkeeping = check_bookkeeping(request.bookkeeping, ctx.settings.bookkeeping_limits)
    nonce = _step1_nonce_from_header(request.nonce_header)
    attempt.nonce = nonce.hex()
    spend = _check_nonce_usable(ctx, nonce, now)
    kem, public_key_raw, public_key = _step2_public_key(request, attempt)
    attempt.identity_key = decode_identity_key(request.identity_key)
    attempt.quote_raw = _step3_decode_quote(request.quote)
    attempt.event_log = _step3b_read_event_log(ctx, request, attempt)
    attempt.quote = quote = parse_td_quote(attempt.quote_raw)
    collateral = _step4_find_collateral(ctx, quote, now)
    attempt.spend = spend
    images, fresh = _step5_take_images(ctx)
    attempt.dcap = _step6_verify_dcap(ctx, quote, collateral, now)
    _step7_check_tcb_status(attempt.dcap, ctx.settings.allowed_tcb_statuses)
    _step8_refuse_debug(quote)
    check_platform_policy(quote, ctx.platform_policy)
    if attempt.event_log is not None:
        check_replay(attempt.event_log, quote)
    events = attempt.event_log.log.events if attempt.event_log is not None else None
    # Step 9 (docs/protocol.md numbers the steps the same way): the image match.
    attempt.image = image = _step9_match_image(ctx, quote, images, fresh=fresh, events=events)
    _step10_check_report_data(quote, nonce, kem, public_key_raw, attempt.identity_key)
    sealed = _step11_release_key(ctx, image, public_key, kem, nonce)
    return BootResult(
        attestation_id=attempt.id, image=image.name, verified_at=now, sealed_key=sealed
    )


def _step1_nonce_from_header(header: str | None) -> bytes:
    if header is None or not header.strip():
        raise NonceRejected(f"the {NONCE_HEADER} header is required", Reason.NONCE_MISSING)
    try:
        return nonce_from_hex(header.strip())
    except ProtocolError as exc:
        raise NonceRejected(f"{NONCE_HEADER}: {exc}", Reason.NONCE_UNKNOWN) from None


def _step2_public_key(request: BootRequest, attempt: _Attempt) -> tuple[Kem, bytes, HpkePublicKey]:
    try:
        kem = parse_kem(request.kem)
        raw = b64decode(request.public_key, "public_key", Reason.PUBLIC_KEY_INVALID)
    except ProtocolError as exc:
        raise RequestInvalid(str(exc), exc.reason) from None
    attempt.kem = kem.value
    attempt.public_key_sha256 = hashlib.sha256(raw).hexdigest()
    return kem, raw, load_public_key(kem, raw)


def _step3_decode_quote(text: str) -> bytes:
    if len(text) > MAX_QUOTE_BASE64_CHARS:
        raise RequestInvalid(
            f"quote is larger than {MAX_QUOTE_BYTES} bytes", Reason.QUOTE_TOO_LARGE
        )
    try:
        raw = b64decode(text, "quote", Reason.QUOTE_MALFORMED)
    except ProtocolError as exc:
        raise RequestInvalid(str(exc), exc.reason) from None
    if len(raw) > MAX_QUOTE_BYTES:
        raise RequestInvalid(
            f"quote is {len(raw)} bytes, larger than {MAX_QUOTE_BYTES}", Reason.QUOTE_TOO_LARGE
        )
    if not raw:
        raise RequestInvalid("quote is empty", Reason.QUOTE_MALFORMED)
    return raw


def _step3b_read_event_log(
    ctx: ServerContext, request: BootRequest, attempt: _Attempt
) -> EventLogEvidence | None:
    # A malformed log is refused with the other input checks, before the nonce is spent;
    # whatever decodes is kept for the audit row, parsed or not.
    if request.event_log is None:
        if ctx.settings.require_event_log:
            raise AttestationRefused(
                "this verifier requires the firmware event log (event_log); update the "
                "image's agent, or check that the TD's kernel exposes the CCEL",
                Reason.EVENT_LOG_REQUIRED,
            )
        return None
    attempt.event_log_raw = decode_event_log_field(request.event_log)
    return parse_event_log_field(attempt.event_log_raw)


def _step4_find_collateral(
    ctx: ServerContext, quote: TdQuote, now: datetime
) -> dcap_qvl.QuoteCollateralV3:
    return ctx.collateral.get(quote.fmspc, quote.ca, now)[1]


def _check_nonce_usable(ctx: ServerContext, nonce: bytes, now: datetime) -> NonceSpend:
    """Refuse an unknown or expired nonce before anything costly (collateral fetches).

    Nothing is spent here. A nonce this server's key did not make may still be one issued
    into the nonces table before boot nonces were stateless.
    """
    expires_at = ctx.boot_nonce_keys().expiry_of(nonce)
    if expires_at is None:
        stored_expiry = ctx.boot_store.look_up_stored_nonce(nonce.hex(), BOOT_SCOPE, now)
        return NonceSpend(nonce.hex(), stored_expiry, stored=True)
    if now >= expires_at:
        raise NonceRejected("nonce has expired; request a new one", Reason.NONCE_EXPIRED)
    return NonceSpend(nonce.hex(), expires_at)


def _step5_take_images(ctx: ServerContext) -> tuple[tuple[ApprovedImage, ...], bool]:
    return ctx.active_images.get()


def _step9_match_image(
    ctx: ServerContext,
    quote: TdQuote,
    images: Sequence[ApprovedImage],
    *,
    fresh: bool,
    events: Sequence[Event] | None,
) -> ImageRecord:
    try:
        return match_image(quote, images, events=events).image
    except AttestationRefused:
        if fresh:
            raise
    # The kept copy may predate the image this TD boots: refuse only on a fresh read.
    return match_image(quote, ctx.active_images.read(), events=events).image


def _step6_verify_dcap(
    ctx: ServerContext, quote: TdQuote, collateral: dcap_qvl.QuoteCollateralV3, now: datetime
) -> DcapVerdict:
    with ctx.metrics.verification_latency.time():
        return verify_dcap(quote.raw, collateral, ctx.trust_root_der, now)


def _step7_check_tcb_status(verdict: DcapVerdict, allowed: tuple[str, ...]) -> None:
    if verdict.tcb_status in allowed:
        return
    advisories = ", ".join(verdict.advisory_ids) or "none"
    raise AttestationRefused(
        f"TCB status {verdict.tcb_status} is not allowed (allowed: {', '.join(allowed)}; "
        f"advisories: {advisories})",
        Reason.TCB_STATUS_REJECTED,
    )


def _step8_refuse_debug(quote: TdQuote) -> None:
    if quote.debug:
        raise AttestationRefused(
            f"TD attributes {quote.td_attributes.hex()} have the DEBUG bit set", Reason.DEBUG_TD
        )


def _step10_check_report_data(
    quote: TdQuote, nonce: bytes, kem: Kem, public_key: bytes, identity_key: bytes | None
) -> None:
    try:
        check = check_boot_report_data(quote.report_data, nonce, kem, public_key, identity_key)
    except ProtocolError as exc:
        raise RequestInvalid(str(exc), exc.reason) from None
    if not check.nonce_matches:
        raise AttestationRefused(
            f"REPORTDATA[0:32] is not the {NONCE_HEADER} nonce", Reason.NONCE_MISMATCH
        )
    if not check.public_key_matches:
        expected = (
            "SHA-256 of public_key"
            if identity_key is None
            else "the v2 binding of kem, public_key and identity_key"
        )
        raise AttestationRefused(
            f"REPORTDATA[32:64] is not {expected}", Reason.REPORT_DATA_MISMATCH
        )


def _step11_release_key(
    ctx: ServerContext, image: ImageRecord, public_key: HpkePublicKey, kem: Kem, nonce: bytes
) -> bytes:
    passphrase = ctx.master_key.unseal(image.sealed_passphrase, image.name)
    return seal_for_agent(passphrase, public_key, kem, nonce)


def _finish(
    ctx: ServerContext,
    request: BootRequest,
    attempt: _Attempt,
    *,
    now: datetime,
    started: float,
    refusal: ServerError | None,
) -> None:
    image = attempt.image
    record = BootAttemptRecord(
        attempt=attempt_record(
            attempt_id=attempt.id,
            now=now,
            refusal=refusal,
            client_ip=request.client_ip,
            nonce=attempt.nonce,
            image_name=image.name if image is not None else None,
            quote_raw=attempt.quote_raw,
            quote=attempt.quote,
            dcap=attempt.dcap,
            event_log_raw=attempt.event_log_raw,
            identity_key=attempt.identity_key.hex() if attempt.identity_key is not None else None,
        ),
        image_id=image.id if image is not None else None,
        advisory_ids=json.dumps(list(attempt.dcap.advisory_ids)) if attempt.dcap else None,
        public_key_sha256=attempt.public_key_sha256,
        kem=attempt.kem,
        vm_name=attempt.bookkeeping.vm_name,
        bookkeeping=attempt.bookkeeping.json_text,
        latency_ms=(time.perf_counter() - started) * 1000,
    )
    _record(ctx, request, attempt, record, now=now, started=started, refusal=refusal)


def _record(
    ctx: ServerContext,
    request: BootRequest,
    attempt: _Attempt,
    record: BootAttemptRecord,
    *,
    now: datetime,
    started: float,
    refusal: ServerError | None,
) -> None:
    """Write the attempt's row, spending its nonce in the same transaction if it has one.

    Raises NonceRejected (nonce_used, recorded as such) when another attempt spent the
    nonce first, and ImageChanged (nothing recorded) when the released image was retired
    or re-keyed since it was read; nothing is released then.
    """
    if attempt.spend is None:
        ctx.boot_store.record_attempt(record)
        _count_and_log(ctx, request, attempt, started=started, refusal=refusal)
        return
    released = attempt.image if refusal is None else None
    try:
        ctx.boot_store.spend_nonce_and_record(attempt.spend, record, now, released)
    except NonceRejected as used:
        ctx.boot_store.record_attempt(record.refused(used))
        _count_and_log(ctx, request, attempt, started=started, refusal=used)
        raise
    _count_and_log(ctx, request, attempt, started=started, refusal=refusal)


def _count_and_log(
    ctx: ServerContext,
    request: BootRequest,
    recorded: _Attempt | None,
    *,
    started: float,
    refusal: ServerError | None,
) -> None:
    """Metrics and the log line of an attempt; ``recorded`` None when it has no row."""
    latency = time.perf_counter() - started
    verdict = "accepted" if refusal is None else "refused"
    reason = None if refusal is None else refusal.reason.value
    ctx.metrics.attestations.labels("boot", verdict, reason or "").inc()
    ctx.metrics.attestation_latency.labels("boot").observe(latency)
    image = recorded.image if recorded is not None else None
    log_attestation(
        "boot",
        verdict=verdict,
        reason=reason,
        image=image.name if image is not None else None,
        client_ip=request.client_ip,
        latency_seconds=latency,
        attestation_id=recorded.id if recorded is not None else None,
    )


def log_attestation(
    kind: str,
    *,
    verdict: str,
    reason: str | None,
    image: str | None,
    client_ip: str | None,
    latency_seconds: float,
    attestation_id: str | None,
) -> None:
    """Emit the one structured (JSON) log line of an attestation. Raises nothing."""
    if not ATTESTATION_LOG.isEnabledFor(logging.INFO):
        return
    ATTESTATION_LOG.info(
        json.dumps(
            {
                "event": "attestation",
                "kind": kind,
                "verdict": verdict,
                "reason": reason,
                "image": image,
                "ip": client_ip,
                "latency_ms": round(latency_seconds * 1000, 3),
                "attestation_id": attestation_id,
            },
            sort_keys=True,
        )
    )


# The steps runtime attestation shares with the boot path (server.fleet.runtime calls
# these rather than repeating them).


def decode_quote(text: str) -> bytes:
    """Decode the base64 ``quote`` field (size-checked). Raises RequestInvalid."""
    return _step3_decode_quote(text)


def verify_quote_platform(ctx: ServerContext, quote: TdQuote, now: datetime) -> DcapVerdict:
    """DCAP-verify ``quote``, then check its TCB status, refuse a debug TD and apply the
    platform policy (MRSEAM, XFAM, TD attributes, minimum TEE_TCB_SVN).

    Raises AttestationRefused / RequestInvalid / CollateralUnavailable as the boot path does.
    """
    collateral = _step4_find_collateral(ctx, quote, now)
    verdict = _step6_verify_dcap(ctx, quote, collateral, now)
    _step7_check_tcb_status(verdict, ctx.settings.allowed_tcb_statuses)
    _step8_refuse_debug(quote)
    check_platform_policy(quote, ctx.platform_policy)
    return verdict
