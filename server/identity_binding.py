"""Protocol v2's identity binding, on the verifier's side.

A v2 agent makes an Ed25519 key pair once per boot and binds its public key into the boot
quote's REPORTDATA (agent.protocol.boot_key_binding); the verifier records it with the
accepted boot, and registration attaches it to the server. A runtime attestation of that
server must then carry a quote whose REPORTDATA binds the same key
(agent.protocol.runtime_identity_binding) and the key's signature over the server id, the
nonce and the quote (agent.protocol.runtime_signature_message): a hash in REPORTDATA alone
proves nothing, since REPORTDATA is chosen by software and the public key is public.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from tdx_boot_attest.agent.protocol import (
    IDENTITY_KEY_BYTES,
    IDENTITY_SIGNATURE_BYTES,
    NONCE_BYTES,
    ProtocolError,
    Reason,
    b64decode,
    identity_signature_is_valid,
    runtime_identity_binding,
    runtime_signature_message,
)
from tdx_boot_attest.server.errors import AttestationRefused, RequestInvalid
from tdx_boot_attest.server.quote import TdQuote


def decode_identity_key(text: str | None) -> bytes | None:
    """The raw identity key of a boot request's ``identity_key`` field (None when absent).

    Raises RequestInvalid(identity_key_invalid) when it is not standard base64 of 32 bytes.
    """
    if text is None:
        return None
    try:
        raw = b64decode(text, "identity_key", Reason.IDENTITY_KEY_INVALID)
    except ProtocolError as exc:
        raise RequestInvalid(str(exc), exc.reason) from None
    if len(raw) != IDENTITY_KEY_BYTES:
        raise RequestInvalid(
            f"identity_key must be {IDENTITY_KEY_BYTES} bytes (an Ed25519 public key), "
            f"got {len(raw)}",
            Reason.IDENTITY_KEY_INVALID,
        )
    return raw


@dataclass(frozen=True, slots=True)
class RuntimeBinding:
    """What a runtime attestation of a bound server must prove: possession of this key."""

    server_id: str
    identity_key: bytes
    signature: bytes

    @property
    def fingerprint(self) -> str:
        """The key's first 8 bytes in hex, to name it in messages. Raises nothing."""
        return self.identity_key[:8].hex() + "…"


def require_runtime_binding(
    server_id: str,
    server_identity_key: str | None,
    signature_text: str | None,
    *,
    required: bool,
) -> RuntimeBinding | None:
    """The binding a runtime attempt must prove, checked before its nonce is spent.

    None means "verified without the binding": only for a server registered from a boot
    without an identity key, and only when ``required`` is False. Raises
    AttestationRefused(server_identity_unknown) for such a server when ``required``,
    AttestationRefused(identity_binding_missing) when a bound server's attempt has no
    ``identity_signature``, RequestInvalid when that signature is malformed.
    """
    if server_identity_key is None:
        if not required:
            return None
        raise AttestationRefused(
            f"server {server_id} was registered from a boot without an identity key (an "
            "agent before protocol v2), so nothing ties its runtime quotes to the TD that "
            "booted it: boot it with a current image, then register it again (the same "
            "POST /servers/ body) to bind that boot; or set "
            "runtime_attestation_require_identity = false",
            Reason.SERVER_IDENTITY_UNKNOWN,
        )
    identity_key = bytes.fromhex(server_identity_key)
    if signature_text is None:
        raise AttestationRefused(
            f"server {server_id} is bound to the identity key of its boot "
            f"({identity_key[:8].hex()}…): send identity_signature with a quote whose "
            "REPORTDATA[32:64] binds that key (protocol v2; tdx-boot-agent runtime does)",
            Reason.IDENTITY_BINDING_MISSING,
        )
    try:
        signature = b64decode(signature_text, "identity_signature")
    except ProtocolError as exc:
        raise RequestInvalid(str(exc), exc.reason) from None
    if len(signature) != IDENTITY_SIGNATURE_BYTES:
        raise RequestInvalid(
            f"identity_signature must be {IDENTITY_SIGNATURE_BYTES} bytes (Ed25519), "
            f"got {len(signature)}"
        )
    return RuntimeBinding(server_id=server_id, identity_key=identity_key, signature=signature)


def check_runtime_binding(binding: RuntimeBinding, quote: TdQuote) -> None:
    """Check a DCAP-verified runtime quote and its signature against the server's key.

    Raises AttestationRefused(identity_mismatch) when REPORTDATA[32:64] does not bind the
    key (the quote comes from another TD, or another boot), and
    AttestationRefused(identity_signature_invalid) when the signature does not verify.
    """
    expected = runtime_identity_binding(binding.identity_key)
    if not hmac.compare_digest(quote.report_data[NONCE_BYTES:], expected):
        raise AttestationRefused(
            f"the quote's REPORTDATA[32:64] does not bind the identity key of the boot "
            f"server {binding.server_id} is bound to ({binding.fingerprint}): the quote "
            "comes from another TD, or from a later boot (after a reboot, register the "
            "server again to bind the new boot)",
            Reason.IDENTITY_MISMATCH,
        )
    message = runtime_signature_message(
        binding.server_id, quote.report_data[:NONCE_BYTES], quote.raw
    )
    if not identity_signature_is_valid(binding.identity_key, binding.signature, message):
        raise AttestationRefused(
            f"identity_signature is not the signature of server {binding.server_id}'s "
            f"identity key ({binding.fingerprint}) over the server id, the nonce and the "
            "quote: it was made by another TD's key, or for another attempt",
            Reason.IDENTITY_SIGNATURE_INVALID,
        )
