"""Request and response bodies of the fleet endpoints (the OpenAPI document is built from these)."""

from __future__ import annotations

import ipaddress
import math
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

# k8s node uids are UUIDs; ids stay short and path-safe, and never shadow a fixed route.
SERVER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
SERVER_ID_MAX_CHARS = 100
RESERVED_SERVER_IDS = frozenset({"nonce", "boot"})
MAX_GPUS_PER_SERVER = 64

ServerId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=SERVER_ID_MAX_CHARS, pattern=SERVER_ID_PATTERN),
]
# Printable text only: PostgreSQL refuses NUL in text columns, and nothing needs controls.
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f]+$"
ShortText = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=PRINTABLE_PATTERN)
]
# A GPU uuid is printable ASCII without spaces (nvidia-smi prints "GPU-8d6f...").
GpuUuid = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[!-~]+$")]
GPU_UUID_PREFIXES = frozenset({"GPU", "MIG"})
AttestationStatus = Literal["never_attested", "verified", "failed", "stale"]


def normalise_gpu_uuid(value: str) -> str:
    """NVIDIA's form of a GPU uuid: the ``GPU-``/``MIG-`` prefix upper case, the rest lower
    case (hex digits); any other uuid lower case. Raises nothing."""
    prefix, dash, rest = value.partition("-")
    if dash and prefix.upper() in GPU_UUID_PREFIXES:
        return f"{prefix.upper()}-{rest.lower()}"
    return value.lower()


class NodeArgs(BaseModel):
    """One GPU of the server, as the miner reports it.

    Fields are strict: a number must be a JSON number (``"9"`` is refused, and an integer
    field refuses ``9.0`` and ``true``), a flag must be ``true`` or ``false``. The uuid is
    stored in its canonical form (normalise_gpu_uuid), so ``gpu-AB...`` and ``GPU-ab...``
    are the same GPU.
    """

    model_config = ConfigDict(strict=True)

    uuid: GpuUuid = Field(
        description="GPU UUID (unique across every registered server; compared and stored "
        "in NVIDIA's form: GPU-/MIG- prefix upper case, the rest lower case)"
    )
    name: ShortText = Field(description="GPU model name")
    memory: int = Field(gt=0, le=2**50, description="Memory in bytes")
    clock_rate: float = Field(gt=0, le=1e12, description="Clock rate (MHz or Hz)")
    device_index: int = Field(ge=0, lt=1024, description="CUDA device index")
    major: int | None = Field(default=None, ge=0, lt=1000)
    minor: int | None = Field(default=None, ge=0, lt=1000)
    processors: int | None = Field(default=None, ge=0, lt=10**6)
    sxm: bool | None = None
    max_threads_per_processor: int | None = Field(default=None, ge=0, lt=10**6)
    concurrent_kernels: bool | None = None
    ecc: bool | None = None

    @field_validator("uuid")
    @classmethod
    def _canonical_uuid(cls, value: str) -> str:
        return normalise_gpu_uuid(value)

    @field_validator("clock_rate")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class ServerArgs(BaseModel):
    """Body of POST /servers/."""

    id: ServerId = Field(description="Server ID, should come from the k8s node uid.")
    host: str = Field(
        min_length=1,
        max_length=64,
        description="IP address of the server (its boot attestations came from it)",
    )
    name: ShortText | None = Field(default=None, description="Display name (defaults to id)")
    gpus: list[NodeArgs] = Field(
        min_length=1, max_length=MAX_GPUS_PER_SERVER, description="GPU info for this server"
    )

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.lower() in RESERVED_SERVER_IDS:
            raise ValueError(f"{value!r} is reserved")
        return value

    @field_validator("host")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise ValueError("must be an IPv4 or IPv6 address") from None

    @model_validator(mode="after")
    def _distinct_gpus(self) -> ServerArgs:
        uuids = [gpu.uuid for gpu in self.gpus]
        if len(set(uuids)) != len(uuids):
            raise ValueError("gpus: each GPU uuid may appear once")
        indexes = [gpu.device_index for gpu in self.gpus]
        if len(set(indexes)) != len(indexes):
            raise ValueError("gpus: each device_index may appear once")
        return self


class GpuOut(BaseModel):
    """A registered GPU."""

    uuid: str
    name: str
    memory: int
    clock_rate: float
    device_index: int
    major: int | None = None
    minor: int | None = None
    processors: int | None = None
    sxm: bool | None = None
    max_threads_per_processor: int | None = None
    concurrent_kernels: bool | None = None
    ecc: bool | None = None


class BootAttestationRef(BaseModel):
    """The boot attestation a server was registered with."""

    attestation_id: str
    verified_at: str = Field(description="RFC 3339 UTC")
    image: str | None
    client_ip: str | None


class ServerOut(BaseModel):
    """A registered server."""

    server_id: str
    name: str
    host: str
    miner_hotkey: str
    created_at: str = Field(description="RFC 3339 UTC")
    image: str | None = Field(
        description="Image the server booted with (from its boot attestation)"
    )
    boot_attestation: BootAttestationRef | None
    identity_key: str | None = Field(
        default=None,
        description="Hex Ed25519 public key of the boot the server is bound to (protocol "
        "v2): runtime attestation must prove possession of it. Null: registered from a "
        "boot without one (an agent before v2)",
    )
    gpus: list[GpuOut]


class ServerDeleted(BaseModel):
    """Result of DELETE /servers/{server_id}."""

    server_id: str
    deleted: bool
    runtime_attestations_kept: int = Field(description="Audit rows kept, marked as deleted")


class RuntimeNonceResponse(BaseModel):
    """A single-use runtime nonce bound to one server."""

    nonce: str = Field(description="64 lowercase hex characters; put it in REPORTDATA[0:32]")
    expires_at: str = Field(description="RFC 3339 UTC")
    server_id: str


class RuntimeAttestationArgs(BaseModel):
    """Body of POST /servers/{server_id}/attestation."""

    quote: str = Field(description="Base64 encoded TDX quote")
    event_log: str | None = Field(
        default=None,
        description="Standard base64 of the firmware event log (CCEL records, no padding)",
    )
    identity_signature: str | None = Field(
        default=None,
        description="Protocol v2: standard base64 of the Ed25519 signature, by the identity "
        "key of the server's boot, of runtime_signature_message(server id, nonce, quote); "
        "the quote's REPORTDATA[32:64] must bind that key. Required for a server bound to "
        "an identity key",
    )


class RuntimeAttestationResponse(BaseModel):
    """An accepted runtime attestation."""

    attestation_id: str
    verified_at: str = Field(description="RFC 3339 UTC")
    status: Literal["verified"]
    image: str
    identity_bound: bool = Field(
        description="True when the attestation proved possession of the identity key of "
        "the boot the server is bound to (false only for a server registered without one, "
        "with runtime_attestation_require_identity = false)"
    )


class EventDifference(BaseModel):
    """One event that differs between a boot's event log and an image's reference events."""

    rtmr: str = Field(description="The register: rtmr0 ... rtmr3")
    event_index: int | None = Field(description="Position in the received log; null: missing")
    event: str = Field(description="Readable event name")
    component: str | None = Field(description="What it measures: kernel, initrd, ...")
    digest_received: str | None
    digest_approved: str | None
    approved_detail: str | None = Field(description="What the image's event measured")


class AttestationOut(BaseModel):
    """One runtime attestation attempt."""

    attestation_id: str
    verified: bool
    created_at: str = Field(description="RFC 3339 UTC")
    verified_at: str | None
    reason: str | None
    message: str | None
    differences: list[EventDifference] | None = Field(
        default=None,
        description="For a measurement_mismatch explained by the event log: the events "
        "that differ from the image's reference events",
    )


class AttestationStatusResponse(BaseModel):
    """Current runtime attestation status of a server."""

    server_id: str
    name: str
    attestation_status: AttestationStatus = Field(
        description="never_attested, verified, failed, or stale (last success too old)"
    )
    last_attestation: AttestationOut | None
    last_verified_at: str | None
    stale_after_seconds: int
    image: str | None
    boot_attestation: BootAttestationRef | None
