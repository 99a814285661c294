"""Platform TCB presets and the TCB levels of the simulated collateral.

A platform's TCB is three things: the CPUSVN (16 SGX TCB components, carried in its PCK
certificate), the PCESVN (also in the PCK certificate) and the TEE_TCB_SVN (16 TDX TCB
components, in every TD report). The default TCB levels are built so that each named
preset lands on exactly one level, whose status is in the level's name:

=================  ==========  ======  ============  ===================================
preset             CPUSVN[0:2] PCESVN  TEE_TCB_SVN   level it matches (default status)
=================  ==========  ======  ============  ===================================
``uptodate``       4 4          13     06 01 03      ``uptodate`` (UpToDate)
``swhardening``    4 4          13     06 01 02      ``swhardening`` (SWHardeningNeeded)
``configneeded``   4 4          12     06 01 03      ``configneeded`` (ConfigurationNeeded)
``outofdate``      3 3          11     06 01 03      ``outofdate`` (OutOfDate)
``revoked``        2 2           5     06 01 03      ``revoked`` (Revoked)
``unknown``        1 1           1     06 01 03      none ("No matching TCB level")
=================  ==========  ======  ============  ===================================

Matching follows Intel's rules as dcap-qvl applies them: the first level (highest first)
whose every SGX component, PCESVN and TDX component is at or below the platform's wins.
When the TDX module version (TEE_TCB_SVN byte 1) is non-zero, the module's own SVN (byte 0)
is judged by the ``TDX_01``-style module identities instead, so the presets vary byte 2
(the TDX late microcode update) to pick a level. No I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any, Final

from tdx_boot_attest.tdxsim.errors import CollateralError


class TcbStatus(enum.StrEnum):
    """The TCB statuses Intel's TCB info and QE identity use."""

    UP_TO_DATE = "UpToDate"
    SW_HARDENING_NEEDED = "SWHardeningNeeded"
    CONFIGURATION_NEEDED = "ConfigurationNeeded"
    CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
    OUT_OF_DATE = "OutOfDate"
    OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"
    REVOKED = "Revoked"


def parse_status(text: str) -> TcbStatus:
    """The TcbStatus named ``text``; raises CollateralError for an unknown name."""
    try:
        return TcbStatus(text)
    except ValueError:
        names = ", ".join(s.value for s in TcbStatus)
        raise CollateralError(f"unknown TCB status {text!r} (use one of: {names})") from None


def _svns(*leading: int) -> bytes:
    return bytes(leading) + bytes(16 - len(leading))


@dataclass(frozen=True, slots=True)
class PlatformTcb:
    """What a platform reports about its TCB: CPUSVN, PCESVN and TEE_TCB_SVN."""

    name: str
    cpusvn: bytes
    pcesvn: int
    tee_tcb_svn: bytes

    def __post_init__(self) -> None:
        if len(self.cpusvn) != 16 or len(self.tee_tcb_svn) != 16:
            raise CollateralError("CPUSVN and TEE_TCB_SVN must be 16 bytes each")
        if not 0 <= self.pcesvn <= 0xFFFF:
            raise CollateralError("PCESVN must fit in 16 bits")


_BASE_SGX: Final = (2, 3, 1, 0, 5)  # components 3..7 stay the same on every preset
TEE_TCB_SVN_CURRENT: Final = _svns(6, 1, 3)
TEE_TCB_SVN_OLD_MICROCODE: Final = _svns(6, 1, 2)

PRESETS: Final[dict[str, PlatformTcb]] = {
    p.name: p
    for p in (
        PlatformTcb("uptodate", _svns(4, 4, *_BASE_SGX), 13, TEE_TCB_SVN_CURRENT),
        PlatformTcb("swhardening", _svns(4, 4, *_BASE_SGX), 13, TEE_TCB_SVN_OLD_MICROCODE),
        PlatformTcb("configneeded", _svns(4, 4, *_BASE_SGX), 12, TEE_TCB_SVN_CURRENT),
        PlatformTcb("outofdate", _svns(3, 3, *_BASE_SGX), 11, TEE_TCB_SVN_CURRENT),
        PlatformTcb("revoked", _svns(2, 2, *_BASE_SGX), 5, TEE_TCB_SVN_CURRENT),
        PlatformTcb("unknown", _svns(1, 1, *_BASE_SGX), 1, TEE_TCB_SVN_CURRENT),
    )
}
DEFAULT_PRESET: Final = "uptodate"


def preset(name: str) -> PlatformTcb:
    """The platform TCB preset called ``name``; raises CollateralError when unknown."""
    try:
        return PRESETS[name]
    except KeyError:
        names = ", ".join(PRESETS)
        raise CollateralError(f"unknown platform TCB {name!r} (use one of: {names})") from None


@dataclass(frozen=True, slots=True)
class TcbLevel:
    """One ``tcbLevels`` entry of the TDX TCB info, with a name for testers to refer to it."""

    name: str
    sgx_components: bytes
    pcesvn: int
    tdx_components: bytes
    status: TcbStatus
    tcb_date: str
    advisory_ids: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """This level as state-file JSON (not the signed TCB info form). Raises nothing."""
        return {
            "name": self.name,
            "sgx_components": list(self.sgx_components),
            "pcesvn": self.pcesvn,
            "tdx_components": list(self.tdx_components),
            "status": self.status.value,
            "tcb_date": self.tcb_date,
            "advisory_ids": list(self.advisory_ids),
        }

    @classmethod
    def from_json(cls, data: Any) -> TcbLevel:
        """Read a level written by to_json; raises CollateralError when malformed."""
        try:
            level = cls(
                name=str(data["name"]),
                sgx_components=bytes(data["sgx_components"]),
                pcesvn=int(data["pcesvn"]),
                tdx_components=bytes(data["tdx_components"]),
                status=parse_status(str(data["status"])),
                tcb_date=str(data["tcb_date"]),
                advisory_ids=tuple(str(a) for a in data.get("advisory_ids", [])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CollateralError(f"malformed TCB level: {exc}") from None
        if len(level.sgx_components) != 16 or len(level.tdx_components) != 16:
            raise CollateralError(f"TCB level {level.name!r} needs 16 SGX and 16 TDX components")
        return level


DEFAULT_TCB_LEVELS: Final = (
    TcbLevel(
        "uptodate",
        _svns(4, 4, *_BASE_SGX),
        13,
        _svns(4, 0, 3),
        TcbStatus.UP_TO_DATE,
        "2025-02-12T00:00:00Z",
    ),
    TcbLevel(
        "swhardening",
        _svns(4, 4, *_BASE_SGX),
        13,
        _svns(4, 0, 2),
        TcbStatus.SW_HARDENING_NEEDED,
        "2024-11-13T00:00:00Z",
        ("INTEL-SA-01079",),
    ),
    TcbLevel(
        "configneeded",
        _svns(4, 4, *_BASE_SGX),
        12,
        _svns(4, 0, 2),
        TcbStatus.CONFIGURATION_NEEDED,
        "2024-08-14T00:00:00Z",
        ("INTEL-SA-01036",),
    ),
    TcbLevel(
        "outofdate",
        _svns(3, 3, *_BASE_SGX),
        11,
        _svns(4, 0, 2),
        TcbStatus.OUT_OF_DATE,
        "2024-03-13T00:00:00Z",
        ("INTEL-SA-00837", "INTEL-SA-00960"),
    ),
    TcbLevel(
        "revoked",
        _svns(2, 2, *_BASE_SGX),
        5,
        _svns(2, 0, 2),
        TcbStatus.REVOKED,
        "2018-01-04T00:00:00Z",
        ("INTEL-SA-00106", "INTEL-SA-00115"),
    ),
)


def with_status(
    levels: tuple[TcbLevel, ...],
    name: str,
    status: TcbStatus,
    advisory_ids: tuple[str, ...] | None = None,
) -> tuple[TcbLevel, ...]:
    """``levels`` with level ``name`` given a new status (and advisories when given).

    Raises CollateralError when no level is called ``name``.
    """
    if name not in {level.name for level in levels}:
        known = ", ".join(level.name for level in levels)
        raise CollateralError(f"no TCB level called {name!r} (levels: {known})")
    return tuple(
        replace(
            level,
            status=status,
            advisory_ids=level.advisory_ids if advisory_ids is None else advisory_ids,
        )
        if level.name == name
        else level
        for level in levels
    )


@dataclass(frozen=True, slots=True)
class QeTcbLevel:
    """One ``tcbLevels`` entry of the TD QE identity."""

    isvsvn: int
    status: TcbStatus
    tcb_date: str
    advisory_ids: tuple[str, ...] = field(default=())


DEFAULT_QE_TCB_LEVELS: Final = (
    QeTcbLevel(4, TcbStatus.UP_TO_DATE, "2024-03-13T00:00:00Z"),
    QeTcbLevel(2, TcbStatus.OUT_OF_DATE, "2023-08-09T00:00:00Z", ("INTEL-SA-00837",)),
)
# The ISVSVN the simulated TD quoting enclave reports (matches the UpToDate QE level).
QE_ISVSVN: Final = 4
