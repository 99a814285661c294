"""The boot protocol's wire format, defined once (the server imports it from here).

Everything here is bytes <-> values with no I/O, so both sides agree to the byte:

* nonce: 32 random bytes, sent as 64 lowercase hex characters.
* REPORTDATA (64 bytes) = nonce (32 bytes) || 32 bytes that bind the keys of the exchange:
  v1: SHA-256(HPKE public key raw bytes);
  v2 (boot, with a per-boot identity key): :func:`boot_key_binding`;
  v2 (runtime): :func:`runtime_identity_binding`.
* HPKE (RFC 9180, base mode, single shot) with a suite named by ``kem``:
  ``x25519`` (default): DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / ChaCha20-Poly1305;
  ``mlkem768-x25519``: the hybrid ML-KEM-768 + X25519 KEM, same KDF and AEAD.
* sealed key = ``Suite.encrypt(passphrase, public_key, info)`` (``enc || ciphertext``),
  with ``info = b"tdx-boot-attest v1 key-release" || nonce``.
* v2 identity: an Ed25519 key pair made once per boot; runtime attestation carries its
  signature of :func:`runtime_signature_message`.
* miner request signatures: :func:`request_signing_message` (the Chutes form, or the
  form that also covers the method and path).
* binary values travel as standard base64 (with padding).
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import hashlib
import hmac
from typing import TYPE_CHECKING, Final, NamedTuple

if TYPE_CHECKING:
    from cryptography.hazmat.primitives import hpke

PROTOCOL_VERSION: Final = 2
NONCE_BYTES: Final = 32
NONCE_HEX_CHARS: Final = 2 * NONCE_BYTES
REPORT_DATA_BYTES: Final = 64
KEY_RELEASE_INFO_PREFIX: Final = b"tdx-boot-attest v1 key-release"
# v2: the per-boot identity key (Ed25519, RFC 8032) and the labels that keep each use of
# a digest or signature apart from every other.
IDENTITY_KEY_BYTES: Final = 32
IDENTITY_SIGNATURE_BYTES: Final = 64
BOOT_KEY_BINDING_LABEL: Final = b"tdx-boot-attest v2 boot-keys"
RUNTIME_IDENTITY_LABEL: Final = b"tdx-boot-attest v2 runtime-identity"
RUNTIME_SIGNATURE_LABEL: Final = b"tdx-boot-attest v2 runtime-signature"

NONCE_HEADER: Final = "X-Chutes-Nonce"
HOTKEY_HEADER: Final = "X-Chutes-Hotkey"
SIGNATURE_HEADER: Final = "X-Chutes-Signature"
# Optional: "request" asks the verifier to check a signature that also covers the method
# and path (request_signing_message); absent or "body" is the Chutes form.
SIGNATURE_SCOPE_HEADER: Final = "X-Attest-Signature-Scope"
SIGNATURE_PURPOSE: Final = "tee"

NONCE_PATH: Final = "/servers/nonce"
BOOT_ATTESTATION_PATH: Final = "/servers/boot/attestation"

# Quotes larger than this are refused before parsing: a real TDX quote with its PEM
# chain is about 5 KiB, so 64 KiB leaves room for v5 bodies and long chains.
MAX_QUOTE_BYTES: Final = 64 * 1024
# The firmware event log travels without its padding: real logs use 2 to 20 KiB of their
# 64 to 256 KiB area, so 256 KiB leaves room for long boot chains (db/dbx certificates,
# GRUB commands) while bounding what a server stores per attempt.
MAX_EVENT_LOG_BYTES: Final = 256 * 1024


class Reason(enum.StrEnum):
    """Stable, machine-readable refusal codes (API bodies, database rows, console lines)."""

    REQUEST_INVALID = "request_invalid"
    NONCE_MISSING = "nonce_missing"
    NONCE_UNKNOWN = "nonce_unknown"
    NONCE_EXPIRED = "nonce_expired"
    NONCE_USED = "nonce_used"
    NONCE_MISMATCH = "nonce_mismatch"
    REPORT_DATA_MISMATCH = "report_data_mismatch"
    PUBLIC_KEY_INVALID = "public_key_invalid"
    KEM_UNSUPPORTED = "kem_unsupported"
    QUOTE_MALFORMED = "quote_malformed"
    QUOTE_TOO_LARGE = "quote_too_large"
    NOT_TDX = "not_tdx"
    QUOTE_VERSION_UNSUPPORTED = "quote_version_unsupported"
    QUOTE_SIGNATURE_INVALID = "quote_signature_invalid"
    CERT_CHAIN_UNTRUSTED = "cert_chain_untrusted"
    PCK_REVOKED = "pck_revoked"
    TCB_STATUS_REJECTED = "tcb_status_rejected"
    COLLATERAL_UNAVAILABLE = "collateral_unavailable"
    DATABASE_UNAVAILABLE = "database_unavailable"
    DEBUG_TD = "debug_td"
    TD_ATTRIBUTES_REJECTED = "td_attributes_rejected"
    MEASUREMENT_MISMATCH = "measurement_mismatch"
    EVENT_LOG_INVALID = "event_log_invalid"
    EVENT_LOG_MISMATCH = "event_log_mismatch"
    EVENT_LOG_REQUIRED = "event_log_required"
    NO_IMAGE_REGISTERED = "no_image_registered"
    RATE_LIMITED = "rate_limited"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    NO_RECENT_BOOT_ATTESTATION = "no_recent_boot_attestation"
    IDENTITY_KEY_INVALID = "identity_key_invalid"
    SERVER_IDENTITY_UNKNOWN = "server_identity_unknown"
    IDENTITY_BINDING_MISSING = "identity_binding_missing"
    IDENTITY_MISMATCH = "identity_mismatch"
    IDENTITY_SIGNATURE_INVALID = "identity_signature_invalid"
    MRSEAM_REJECTED = "mrseam_rejected"
    XFAM_REJECTED = "xfam_rejected"
    TEE_TCB_SVN_TOO_LOW = "tee_tcb_svn_too_low"
    CONFIG_INVALID = "config_invalid"
    INTERNAL_ERROR = "internal_error"


# Refusals a client may retry with a fresh nonce and quote; every other one is final.
RETRYABLE_REASONS: Final = frozenset(
    {
        Reason.NONCE_EXPIRED,
        Reason.COLLATERAL_UNAVAILABLE,
        Reason.DATABASE_UNAVAILABLE,
        Reason.RATE_LIMITED,
    }
)


class ProtocolError(ValueError):
    """A value does not have the shape the protocol requires; ``reason`` says which rule."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Kem(enum.StrEnum):
    """HPKE KEMs the protocol names in the ``kem`` body field."""

    X25519 = "x25519"
    MLKEM768_X25519 = "mlkem768-x25519"


DEFAULT_KEM: Final = Kem.X25519

# Raw public key sizes, so a server rejects a wrong-length key before any HPKE call.
PUBLIC_KEY_BYTES: Final = {Kem.X25519: 32, Kem.MLKEM768_X25519: 1216}


def parse_kem(name: str) -> Kem:
    """Return the KEM called ``name``; raises ProtocolError(kem_unsupported) otherwise."""
    try:
        return Kem(name)
    except ValueError:
        supported = ", ".join(k.value for k in Kem)
        raise ProtocolError(
            Reason.KEM_UNSUPPORTED, f"kem {name!r} is not supported (use one of: {supported})"
        ) from None


@functools.cache
def hpke_suite(kem: Kem) -> hpke.Suite:
    """The HPKE suite for ``kem`` (KDF HKDF-SHA256, AEAD ChaCha20-Poly1305), made once per
    process (the server seals a key with it on every boot). Raises nothing."""
    from cryptography.hazmat.primitives import hpke

    kem_id = hpke.KEM.X25519 if kem is Kem.X25519 else hpke.KEM.MLKEM768_X25519
    return hpke.Suite(kem_id, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


def nonce_to_hex(nonce: bytes) -> str:
    """Encode a 32-byte nonce as 64 lowercase hex characters; raises ProtocolError."""
    if len(nonce) != NONCE_BYTES:
        raise ProtocolError(Reason.REQUEST_INVALID, f"nonce must be {NONCE_BYTES} bytes")
    return nonce.hex()


def nonce_from_hex(text: str) -> bytes:
    """Decode a nonce from 64 hex characters (either case); raises ProtocolError."""
    if len(text) != NONCE_HEX_CHARS:
        raise ProtocolError(
            Reason.REQUEST_INVALID,
            f"nonce must be {NONCE_HEX_CHARS} hex characters, got {len(text)}",
        )
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ProtocolError(Reason.REQUEST_INVALID, "nonce is not hexadecimal") from None


def public_key_digest(public_key: bytes) -> bytes:
    """SHA-256 of the raw public key bytes: the second half of REPORTDATA. Raises nothing."""
    return hashlib.sha256(public_key).digest()


def report_data(nonce: bytes, public_key: bytes) -> bytes:
    """REPORTDATA = nonce || SHA-256(public key); raises ProtocolError for a bad nonce size."""
    if len(nonce) != NONCE_BYTES:
        raise ProtocolError(Reason.REQUEST_INVALID, f"nonce must be {NONCE_BYTES} bytes")
    return nonce + public_key_digest(public_key)


class ReportDataCheck(NamedTuple):
    """Which halves of a quote's REPORTDATA match what the request claims."""

    nonce_matches: bool
    public_key_matches: bool


def check_report_data(quoted: bytes, nonce: bytes, public_key: bytes) -> ReportDataCheck:
    """Compare a quote's REPORTDATA with ``nonce`` and ``public_key`` (v1) in constant time.

    Raises ProtocolError(quote_malformed) when ``quoted`` is not 64 bytes.
    """
    return compare_report_data(quoted, nonce, public_key_digest(public_key))


def compare_report_data(quoted: bytes, nonce: bytes, binding: bytes) -> ReportDataCheck:
    """Compare a quote's REPORTDATA with ``nonce || binding`` in constant time.

    ``public_key_matches`` says whether the second half equals ``binding``. Raises
    ProtocolError(quote_malformed) when ``quoted`` is not 64 bytes.
    """
    if len(quoted) != REPORT_DATA_BYTES:
        raise ProtocolError(Reason.QUOTE_MALFORMED, "REPORTDATA must be 64 bytes")
    return ReportDataCheck(
        nonce_matches=hmac.compare_digest(quoted[:NONCE_BYTES], nonce),
        public_key_matches=hmac.compare_digest(quoted[NONCE_BYTES:], binding),
    )


def _field(data: bytes) -> bytes:
    """``data`` preceded by its length as a 2-byte big-endian integer."""
    if len(data) > 0xFFFF:
        raise ProtocolError(Reason.REQUEST_INVALID, "a bound value is longer than 65535 bytes")
    return len(data).to_bytes(2, "big") + data


def _check_identity_key(identity_key: bytes) -> None:
    if len(identity_key) != IDENTITY_KEY_BYTES:
        raise ProtocolError(
            Reason.IDENTITY_KEY_INVALID,
            f"identity_key must be {IDENTITY_KEY_BYTES} bytes (an Ed25519 public key), "
            f"got {len(identity_key)}",
        )


def boot_key_binding(kem: Kem, public_key: bytes, identity_key: bytes) -> bytes:
    """REPORTDATA[32:64] of a v2 boot: SHA-256 over the label, the KEM and both public keys.

    ``SHA-256("tdx-boot-attest v2 boot-keys" || F(kem name) || F(HPKE public key) ||
    F(identity public key))`` where ``F(x)`` is x's length (2 bytes, big-endian) then x.
    Raises ProtocolError(identity_key_invalid) when ``identity_key`` is not 32 bytes.
    """
    _check_identity_key(identity_key)
    material = (
        BOOT_KEY_BINDING_LABEL
        + _field(kem.value.encode("ascii"))
        + _field(public_key)
        + _field(identity_key)
    )
    return hashlib.sha256(material).digest()


def boot_report_data(nonce: bytes, kem: Kem, public_key: bytes, identity_key: bytes) -> bytes:
    """REPORTDATA of a v2 boot: nonce || boot_key_binding(...). Raises ProtocolError."""
    if len(nonce) != NONCE_BYTES:
        raise ProtocolError(Reason.REQUEST_INVALID, f"nonce must be {NONCE_BYTES} bytes")
    return nonce + boot_key_binding(kem, public_key, identity_key)


def check_boot_report_data(
    quoted: bytes, nonce: bytes, kem: Kem, public_key: bytes, identity_key: bytes | None
) -> ReportDataCheck:
    """Compare a boot quote's REPORTDATA with what the request claims, in constant time:
    v1 (no ``identity_key``) nonce || SHA-256(public key), v2 nonce || boot_key_binding.

    Raises ProtocolError when ``quoted`` is not 64 bytes or ``identity_key`` not 32.
    """
    if identity_key is None:
        return check_report_data(quoted, nonce, public_key)
    return compare_report_data(quoted, nonce, boot_key_binding(kem, public_key, identity_key))


def runtime_identity_binding(identity_key: bytes) -> bytes:
    """REPORTDATA[32:64] of a v2 runtime attestation.

    ``SHA-256("tdx-boot-attest v2 runtime-identity" || F(identity public key))``. Raises
    ProtocolError(identity_key_invalid) when ``identity_key`` is not 32 bytes.
    """
    _check_identity_key(identity_key)
    return hashlib.sha256(RUNTIME_IDENTITY_LABEL + _field(identity_key)).digest()


def runtime_report_data(nonce: bytes, identity_key: bytes) -> bytes:
    """REPORTDATA of a v2 runtime attestation: nonce || runtime_identity_binding(...).

    Raises ProtocolError for a bad nonce or identity key size.
    """
    if len(nonce) != NONCE_BYTES:
        raise ProtocolError(Reason.REQUEST_INVALID, f"nonce must be {NONCE_BYTES} bytes")
    return nonce + runtime_identity_binding(identity_key)


def runtime_signature_message(server_id: str, nonce: bytes, quote: bytes) -> bytes:
    """What the identity key signs for a runtime attestation of ``server_id``.

    ``"tdx-boot-attest v2 runtime-signature" || F(server id, UTF-8) || nonce (32 bytes) ||
    SHA-256(quote)``: the signature names the server, is fresh, and covers the quote it
    travels with. Raises ProtocolError(request_invalid) for a bad nonce size.
    """
    if len(nonce) != NONCE_BYTES:
        raise ProtocolError(Reason.REQUEST_INVALID, f"nonce must be {NONCE_BYTES} bytes")
    return (
        RUNTIME_SIGNATURE_LABEL
        + _field(server_id.encode("utf-8"))
        + nonce
        + hashlib.sha256(quote).digest()
    )


def identity_signature_is_valid(identity_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is the Ed25519 signature of ``message`` by ``identity_key``.

    Raises nothing: a malformed key or signature is simply not valid.
    """
    if len(identity_key) != IDENTITY_KEY_BYTES or len(signature) != IDENTITY_SIGNATURE_BYTES:
        return False
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ed25519

    try:
        ed25519.Ed25519PublicKey.from_public_bytes(identity_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


class SignatureScope(enum.StrEnum):
    """What a miner's request signature covers (the SIGNATURE_SCOPE_HEADER value)."""

    BODY = "body"  # the Chutes form: hotkey, timestamp and body
    REQUEST = "request"  # also the method and the path


def request_signing_message(
    hotkey: str,
    timestamp: str,
    body: bytes,
    *,
    scope: SignatureScope = SignatureScope.BODY,
    method: str = "",
    path: str = "",
) -> bytes:
    """The exact bytes a miner signs for a request.

    ``body`` scope (Chutes): ``"{hotkey}:{timestamp}:{X}"``, X the SHA-256 hex of the body,
    or ``tee`` for a request without one. ``request`` scope appends ``":{METHOD}:{path}"``
    (the method upper-case; the path as sent, with ``?query`` when there is one), so a
    signature for one request cannot be replayed as another. Raises nothing.
    """
    subject = hashlib.sha256(body).hexdigest() if body else SIGNATURE_PURPOSE
    message = f"{hotkey}:{timestamp}:{subject}"
    if scope is SignatureScope.REQUEST:
        message += f":{method.upper()}:{path}"
    return message.encode()


def key_release_info(nonce: bytes) -> bytes:
    """HPKE ``info`` for the sealed key: the fixed label || nonce. Raises ProtocolError."""
    if len(nonce) != NONCE_BYTES:
        raise ProtocolError(Reason.REQUEST_INVALID, f"nonce must be {NONCE_BYTES} bytes")
    return KEY_RELEASE_INFO_PREFIX + nonce


def b64encode(data: bytes) -> str:
    """Standard base64 with padding, as every binary field travels. Raises nothing."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, field: str, reason: Reason = Reason.REQUEST_INVALID) -> bytes:
    """Strictly decode standard base64: the one text ``b64encode`` makes for the bytes.

    No whitespace, no URL alphabet, padding exactly as needed (none missing, none extra)
    and zero bits after the last byte. Raises ProtocolError(``reason``) naming ``field``
    when ``text`` is not such base64.
    """
    try:
        encoded = text.encode("ascii")
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ProtocolError(reason, f"{field} is not valid standard base64") from None
    # The decoder tolerates padding after a complete group ("QUJD=") and stray low bits
    # ("QR=="); a second spelling of the same bytes is refused rather than normalised.
    if base64.b64encode(raw) != encoded:
        raise ProtocolError(reason, f"{field} is not canonical standard base64 (extra padding?)")
    return raw
