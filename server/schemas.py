"""Request and response bodies of the boot path (the OpenAPI document is built from these)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tdx_boot_attest.agent.protocol import DEFAULT_KEM


class NonceResponse(BaseModel):
    """A fresh single-use nonce."""

    nonce: str = Field(description="64 lowercase hex characters (32 random bytes)")
    expires_at: str = Field(description="RFC 3339 UTC time after which the nonce is refused")


class BootAttestationRequest(BaseModel):
    """Body of POST /servers/boot/attestation; extra bookkeeping fields are recorded."""

    model_config = ConfigDict(extra="allow")

    quote: str = Field(description="Base64 encoded TDX quote")
    public_key: str = Field(
        description="Standard base64 of the agent's raw one-time HPKE public key; "
        "SHA-256 of it must be REPORTDATA[32:64] (v1), or it is bound with identity_key (v2)"
    )
    kem: str = Field(
        default=DEFAULT_KEM.value, description="HPKE KEM of public_key: x25519 or mlkem768-x25519"
    )
    event_log: str | None = Field(
        default=None,
        description="Standard base64 of the firmware event log (CCEL records, no padding); "
        "replayed against the quote and used to name what differs when a boot is refused",
    )
    identity_key: str | None = Field(
        default=None,
        description="Protocol v2: standard base64 of the agent's per-boot Ed25519 identity "
        "public key (32 bytes); REPORTDATA[32:64] is then the v2 binding of kem, public_key "
        "and identity_key. Recorded with the boot; runtime attestation of a server "
        "registered from this boot must prove possession of it",
    )
    vm_name: str | None = Field(default=None, description="Name of the VM (bookkeeping)")


class BootAttestationResponse(BaseModel):
    """An accepted boot attestation with the sealed LUKS passphrase."""

    attestation_id: str
    image: str = Field(description="Name of the approved image the measurements matched")
    verified_at: str = Field(description="RFC 3339 UTC")
    sealed_key: str = Field(
        description="Standard base64 of HPKE enc || ciphertext of the LUKS passphrase"
    )


class ErrorResponse(BaseModel):
    """Every refusal: a stable reason code and a message naming what differed."""

    detail: str = Field(description='"<reason>: <message>"')
    reason: str
    message: str
