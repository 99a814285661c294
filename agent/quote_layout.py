"""The Intel DCAP quote layout (v4 and v5), defined once for agent, verifier and simulator.

Pure constants, no I/O and no imports of ours: the verifier and the simulator read the
same offsets as the agent. Offsets follow Intel's "TDX DCAP Quoting Library API"; every
integer is little-endian.

A quote is a 48-byte header, then the body: in v4 the 584-byte TD 1.0 report; in v5 a
6-byte body descriptor (type u16, size u32) and a TD 1.0 (type 2) or TD 1.5 (type 3,
648 bytes) report, or an SGX enclave report (type 1, 384 bytes); then the signature
data (length u32, signature, attestation key, certification data).
"""

from __future__ import annotations

from typing import Final, NamedTuple


class Field(NamedTuple):
    """One field of a structure: its name, offset from the structure's start, size."""

    name: str
    offset: int
    size: int

    @property
    def end(self) -> int:
        """The offset just past the field. Raises nothing."""
        return self.offset + self.size


# -- the header ---------------------------------------------------------------------------

HEADER_BYTES: Final = 48
HEADER_VERSION: Final = Field("version", 0, 2)
HEADER_ATTESTATION_KEY_TYPE: Final = Field("attestation_key_type", 2, 2)
HEADER_TEE_TYPE: Final = Field("tee_type", 4, 4)
HEADER_QE_SVN: Final = Field("qe_svn", 8, 2)
HEADER_PCE_SVN: Final = Field("pce_svn", 10, 2)
HEADER_QE_VENDOR_ID: Final = Field("qe_vendor_id", 12, 16)
HEADER_USER_DATA: Final = Field("user_data", 28, 20)

TEE_TYPE_SGX: Final = 0x00000000
TEE_TYPE_TDX: Final = 0x00000081
SUPPORTED_TDX_VERSIONS: Final = frozenset({4, 5})

# -- the body -------------------------------------------------------------------------------

BODY_DESCRIPTOR_BYTES: Final = 6  # v5: body type (u16), body size (u32)
BODY_SGX_ENCLAVE: Final = 1
BODY_TD_REPORT10: Final = 2
BODY_TD_REPORT15: Final = 3
ENCLAVE_REPORT_BYTES: Final = 384
TD_REPORT10_BYTES: Final = 584
TD_REPORT15_BYTES: Final = 648
BODY_BYTES: Final = {
    BODY_SGX_ENCLAVE: ENCLAVE_REPORT_BYTES,
    BODY_TD_REPORT10: TD_REPORT10_BYTES,
    BODY_TD_REPORT15: TD_REPORT15_BYTES,
}

# The TD 1.0 report body, in order; a TD 1.5 report appends TD_REPORT15_EXTRA_FIELDS.
TD_REPORT10_FIELDS: Final = (
    Field("tee_tcb_svn", 0, 16),
    Field("mrseam", 16, 48),
    Field("mrsignerseam", 64, 48),
    Field("seam_attributes", 112, 8),
    Field("td_attributes", 120, 8),
    Field("xfam", 128, 8),
    Field("mrtd", 136, 48),
    Field("mrconfigid", 184, 48),
    Field("mrowner", 232, 48),
    Field("mrownerconfig", 280, 48),
    Field("rtmr0", 328, 48),
    Field("rtmr1", 376, 48),
    Field("rtmr2", 424, 48),
    Field("rtmr3", 472, 48),
    Field("report_data", 520, 64),
)
TD_REPORT15_EXTRA_FIELDS: Final = (
    Field("tee_tcb_svn2", 584, 16),
    Field("mr_service_td", 600, 48),
)
TD_REPORT_FIELD: Final = {f.name: f for f in TD_REPORT10_FIELDS + TD_REPORT15_EXTRA_FIELDS}

# TD attributes (little-endian u64): bit 0 DEBUG, bit 28 SEPT_VE_DISABLE.
TD_ATTRIBUTE_DEBUG: Final = 1 << 0
TD_ATTRIBUTE_SEPT_VE_DISABLE: Final = 1 << 28


def body_offset(version: int) -> int:
    """Where the TD report body starts in a quote of ``version`` (4 or 5).

    Raises ValueError for another version.
    """
    if version == 4:
        return HEADER_BYTES
    if version == 5:
        return HEADER_BYTES + BODY_DESCRIPTOR_BYTES
    raise ValueError(f"quote version {version} is not 4 or 5")
