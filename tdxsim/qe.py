"""The simulated TD quoting enclave: its identity and the SGX report it signs with the PCK key.

No I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from tdx_boot_attest.tdxsim import keys, tcb
from tdx_boot_attest.tdxsim.abi import EnclaveReport

# ISVPRODID of Intel's TD quoting enclave; the QE identity's ``isvprodid``.
TD_QE_ISVPRODID: Final = 2
# INIT | MODE64BIT | PROVISIONKEY, as a production TD QE reports; the QE identity masks
# PROVISIONKEY out (attributesMask FBFF...), and DEBUG (0x02) is never set.
QE_ATTRIBUTES: Final = bytes([0x15]) + bytes(7) + bytes([0xE7]) + bytes(7)
QE_IDENTITY_ATTRIBUTES: Final = bytes([0x11]) + bytes(15)
QE_IDENTITY_ATTRIBUTES_MASK: Final = bytes.fromhex("FBFFFFFFFFFFFFFF0000000000000000")
QE_MISCSELECT: Final = 0
# Intel's QE fills its authentication data with 0x00..0x1f; verifiers require 32 bytes.
QE_AUTH_DATA: Final = bytes(range(32))


@dataclass(frozen=True, slots=True)
class QuotingEnclave:
    """The identity values of the simulated TD QE."""

    mrenclave: bytes
    mrsigner: bytes
    isvprodid: int = TD_QE_ISVPRODID
    isvsvn: int = tcb.QE_ISVSVN
    qe_id: bytes = bytes(16)

    @classmethod
    def for_seed(cls, seed: int) -> QuotingEnclave:
        """The QE of the platform made from ``seed``. Raises nothing."""
        return cls(
            mrenclave=keys.derive_bytes(seed, "td qe mrenclave", 32),
            mrsigner=keys.derive_bytes(seed, "td qe mrsigner", 32),
            qe_id=keys.derive_bytes(seed, "qe id", 16),
        )

    def report(self, cpusvn: bytes, attestation_key: bytes, auth_data: bytes) -> EnclaveReport:
        """The QE's SGX report binding the attestation key: REPORTDATA =
        SHA-256(attestation key || QE auth data) || 32 zero bytes. Raises nothing.
        """
        digest = hashlib.sha256(attestation_key + auth_data).digest()
        return EnclaveReport(
            cpu_svn=cpusvn,
            misc_select=QE_MISCSELECT,
            reserved1=bytes(28),
            attributes=QE_ATTRIBUTES,
            mr_enclave=self.mrenclave,
            reserved2=bytes(32),
            mr_signer=self.mrsigner,
            reserved3=bytes(96),
            isv_prod_id=self.isvprodid,
            isv_svn=self.isvsvn,
            reserved4=bytes(60),
            report_data=digest + bytes(32),
        )
