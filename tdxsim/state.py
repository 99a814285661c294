"""A simulated TDX platform kept in a state directory.

Layout of ``STATE_DIR``:

* ``state.json``      seed, FMSPC, platform TCB preset, revocations, collateral parameters
* ``root_ca.der``     the simulated root CA certificate: the trust root verifiers are given
* ``collateral.json`` current collateral in dcap-qvl ``QuoteCollateralV3`` JSON
* ``pki/``            certificates (DER) and the simulator's private keys (PEM, mode 0600)

The private keys are those of the simulated hardware root (a test fixture, not a product
secret). Files are replaced atomically so readers (FUSE device, PCS endpoint) never see a
half-written file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tdx_boot_attest.tdxsim import abi, keys, quote, tcb
from tdx_boot_attest.tdxsim import collateral as coll
from tdx_boot_attest.tdxsim.errors import CollateralError, PkiError, QuoteFormatError, StateError
from tdx_boot_attest.tdxsim.pki import Identity, Pki, issue_pck_leaf, write_private
from tdx_boot_attest.tdxsim.profile import Profile
from tdx_boot_attest.tdxsim.qe import QuotingEnclave

STATE_FORMAT: Final = 1
DEFAULT_FMSPC: Final = bytes.fromhex("00806F050000")
STATE_FILE: Final = "state.json"
ROOT_CA_FILE: Final = "root_ca.der"
COLLATERAL_FILE: Final = "collateral.json"
PKI_DIR: Final = "pki"
ATTESTATION_KEY_FILE: Final = "attestation.key.pem"
# Signing parts kept per (platform TCB, QE): one per TCB a test quotes with, bounded.
MAX_KEPT_SIGNERS: Final = 64

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """The current time in UTC, whole seconds. Raises nothing."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _revocations_to_json(revoked: Mapping[int, dt.datetime]) -> dict[str, str]:
    return {f"{serial:x}": coll.format_time(when) for serial, when in sorted(revoked.items())}


def _revocations_from_json(data: Any) -> dict[int, dt.datetime]:
    if not isinstance(data, dict):
        raise StateError("revocations must be a JSON object")
    try:
        return {int(k, 16): coll.parse_time(str(v)) for k, v in data.items()}
    except ValueError:
        raise StateError("malformed revocation entry in state.json") from None


class SimState:
    """One simulated platform: its PKI, QE, attestation key, TCB preset and collateral."""

    def __init__(
        self,
        path: Path,
        *,
        seed: int,
        fmspc: bytes,
        platform_tcb: str,
        pki: Pki,
        attestation_key_pem: bytes,
        params: coll.CollateralParams,
        revoked_pck: Mapping[int, dt.datetime],
        revoked_ca: Mapping[int, dt.datetime],
        clock: Clock,
    ) -> None:
        self.path = path
        self.seed = seed
        self._fmspc = fmspc
        self._platform_tcb = tcb.preset(platform_tcb).name
        self.pki = pki
        key = serialization.load_pem_private_key(attestation_key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError("attestation key is not an EC key")
        self._attestation_key = key
        self.qe = QuotingEnclave.for_seed(seed)
        self.params = params
        self.revoked_pck = dict(revoked_pck)
        self.revoked_ca = dict(revoked_ca)
        self._clock = clock
        self._collateral_json = ""
        self._signers: dict[
            tuple[tcb.PlatformTcb, QuotingEnclave],
            tuple[quote.Signer, abi.QeReportCertificationData],
        ] = {}

    # -- creation and loading ---------------------------------------------------------------

    @classmethod
    def init(
        cls,
        path: Path | str,
        seed: int = 0,
        *,
        fmspc: bytes = DEFAULT_FMSPC,
        platform_tcb: str = tcb.DEFAULT_PRESET,
        validity: dt.timedelta = coll.DEFAULT_VALIDITY,
        clock: Clock = utc_now,
        overwrite: bool = False,
    ) -> SimState:
        """Create a platform in ``path`` from ``seed`` and write everything to disk.

        Collateral is issued an hour before now and stays valid for ``validity``.
        Raises StateError when ``path`` already holds a state (unless ``overwrite``),
        PkiError/CollateralError for bad parameters, OSError when files cannot be written.
        """
        root = Path(path)
        if (root / STATE_FILE).exists() and not overwrite:
            raise StateError(f"{root} already holds a simulator state (state.json exists)")
        tcb.preset(platform_tcb)  # refuse a bad name before anything is written
        params = coll.CollateralParams.fresh(clock(), validity)
        root.mkdir(parents=True, exist_ok=True)
        pki = Pki.generate(seed, fmspc)
        pki.save(root / PKI_DIR)
        attestation_key = keys.derive_p256_key(seed, "attestation key").private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private(root / PKI_DIR / ATTESTATION_KEY_FILE, attestation_key)
        state = cls(
            root,
            seed=seed,
            fmspc=fmspc,
            platform_tcb=platform_tcb,
            pki=pki,
            attestation_key_pem=attestation_key,
            params=params,
            revoked_pck={},
            revoked_ca={},
            clock=clock,
        )
        _atomic_write(root / ROOT_CA_FILE, pki.root.der)
        state.save()
        return state

    @classmethod
    def load(cls, path: Path | str, *, clock: Clock = utc_now) -> SimState:
        """Read a state directory made by init().

        Raises StateError when it is missing or malformed, PkiError for bad key files.
        """
        root = Path(path)
        try:
            data = json.loads((root / STATE_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StateError(
                f"{root} is not a simulator state (run `tdxsim init {root}`)"
            ) from None
        except (OSError, json.JSONDecodeError) as exc:
            raise StateError(f"cannot read {root / STATE_FILE}: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise StateError(f"{root / STATE_FILE} has an unknown format")
        try:
            attestation_key = (root / PKI_DIR / ATTESTATION_KEY_FILE).read_bytes()
            state = cls(
                root,
                seed=int(data["seed"]),
                fmspc=bytes.fromhex(data["fmspc"]),
                platform_tcb=str(data["platform_tcb"]),
                pki=Pki.load(root / PKI_DIR),
                attestation_key_pem=attestation_key,
                params=coll.CollateralParams.from_json(data["collateral"]),
                revoked_pck=_revocations_from_json(data["revoked_pck"]),
                revoked_ca=_revocations_from_json(data["revoked_ca"]),
                clock=clock,
            )
            state._collateral_json = (root / COLLATERAL_FILE).read_text(encoding="utf-8")
        except (KeyError, TypeError, ValueError, OSError, CollateralError) as exc:
            raise StateError(f"{root} is an incomplete or damaged simulator state: {exc}") from None
        return state

    def save(self) -> None:
        """Re-sign the collateral and write state.json and collateral.json.

        Raises OSError when the files cannot be written.
        """
        self._collateral_json = self.collateral.to_qvl_json()
        data = {
            "format": STATE_FORMAT,
            "seed": self.seed,
            "fmspc": self._fmspc.hex().upper(),
            "platform_tcb": self._platform_tcb,
            "revoked_pck": _revocations_to_json(self.revoked_pck),
            "revoked_ca": _revocations_to_json(self.revoked_ca),
            "collateral": self.params.to_json(),
        }
        _atomic_write(self.path / STATE_FILE, (json.dumps(data, indent=2) + "\n").encode())
        _atomic_write(self.path / COLLATERAL_FILE, self._collateral_json.encode())

    # -- what verifiers are given -----------------------------------------------------------

    @property
    def root_ca_der(self) -> bytes:
        """The simulated root CA certificate (DER): the trust root to verify against."""
        return self.pki.root.der

    @property
    def fmspc(self) -> bytes:
        """The platform's FMSPC (6 bytes). Raises nothing."""
        return self._fmspc

    @property
    def platform_tcb(self) -> str:
        """Name of the platform TCB preset quotes are made with. Raises nothing."""
        return self._platform_tcb

    @property
    def collateral(self) -> coll.Collateral:
        """The collateral signed for the current parameters. Raises CollateralError."""
        return coll.build(
            self.pki,
            self.qe,
            fmspc=self._fmspc,
            params=self.params,
            revoked_pck=self.revoked_pck,
            revoked_ca=self.revoked_ca,
        )

    @property
    def collateral_json(self) -> str:
        """Current collateral as dcap-qvl ``QuoteCollateralV3`` JSON (collateral.json)."""
        if not self._collateral_json:
            self._collateral_json = self.collateral.to_qvl_json()
        return self._collateral_json

    # -- quotes ------------------------------------------------------------------------------

    def make_quote(
        self,
        report_data: bytes,
        profile: Profile | None = None,
        *,
        version: int = 4,
        debug: bool = False,
        td15: bool | None = None,
        platform_tcb: str | tcb.PlatformTcb | None = None,
        qe_isvsvn: int | None = None,
    ) -> bytes:
        """A signed TDX quote over ``report_data`` (64 bytes) for a TD measured as ``profile``.

        ``version`` 4 carries a TDX 1.0 body; 5 carries a TDX 1.5 body unless ``td15`` is
        False. ``platform_tcb`` picks another TCB for this quote only: a preset name, or a
        PlatformTcb with any CPUSVN/PCESVN/TEE_TCB_SVN (its PCK certificate is issued on
        the fly, deterministically). ``qe_isvsvn`` makes the quoting enclave report another
        ISVSVN (the QE identity's levels judge it). ``debug`` sets the TD's DEBUG attribute. Raises
        QuoteFormatError for bad REPORTDATA, QuoteVersionError for an unsupported version,
        CollateralError for an unknown preset.
        """
        if qe_isvsvn is not None and not 0 <= qe_isvsvn <= 0xFFFF:
            raise QuoteFormatError(f"QE ISVSVN must be 0..65535, got {qe_isvsvn}")
        platform = self._platform(platform_tcb)
        body15 = (version == 5) if td15 is None else td15
        report = quote.td_report(
            profile or Profile.default(), report_data, platform, td15=body15, debug=debug
        )
        qe = self.qe if qe_isvsvn is None else replace(self.qe, isvsvn=qe_isvsvn)
        signer, certification = self._signer(platform, qe)
        return quote.sign(report, version, signer, platform.cpusvn, certification).to_bytes()

    def _signer(
        self, platform: tcb.PlatformTcb, qe: QuotingEnclave
    ) -> tuple[quote.Signer, abi.QeReportCertificationData]:
        """The signing parts for ``platform`` and ``qe``, and the QE's certification of the
        attestation key, made once per pair (as a QE does) and kept."""
        kept = self._signers.get((platform, qe))
        if kept is not None:
            return kept
        leaf = self.pck_leaf(platform)
        signer = quote.Signer(
            attestation_key=self._attestation_key,
            pck=leaf,
            pck_chain_pem=leaf.pem + self.pki.platform_ca.pem + self.pki.root.pem,
            qe=qe,
        )
        made = (signer, quote.certify_attestation_key(signer, platform.cpusvn))
        if len(self._signers) >= MAX_KEPT_SIGNERS:
            self._signers.clear()
        self._signers[(platform, qe)] = made
        return made

    def _platform(self, choice: str | tcb.PlatformTcb | None) -> tcb.PlatformTcb:
        if isinstance(choice, tcb.PlatformTcb):
            return choice
        return tcb.preset(choice or self._platform_tcb)

    def pck_leaf(self, platform: str | tcb.PlatformTcb | None = None) -> Identity:
        """The PCK certificate and key of a TCB preset or custom TCB (default: current).

        Raises CollateralError for an unknown preset name.
        """
        resolved = self._platform(platform)
        if tcb.PRESETS.get(resolved.name) == resolved:
            return self.pki.pck_leaf(resolved.name)
        return issue_pck_leaf(self.seed, self._fmspc, resolved, self.pki.platform_ca)

    # -- tester controls -----------------------------------------------------------------------

    def set_platform_tcb(self, name: str) -> None:
        """Make quotes with TCB preset ``name`` from now on and save.

        Raises CollateralError for an unknown preset, OSError when saving fails.
        """
        self._platform_tcb = tcb.preset(name).name
        self.save()

    def revoke_pck(
        self, preset: str | tcb.PlatformTcb | None = None, *, serial: int | None = None
    ) -> int:
        """Put a PCK leaf on the PCK CRL and re-issue the collateral; returns its serial.

        Names the leaf by TCB preset or custom TCB (default: the current preset) or by
        ``serial`` (of a preset's leaf). Raises PkiError for an unknown serial,
        CollateralError for an unknown preset, OSError when saving fails.
        """
        if serial is None:
            serial = self.pck_leaf(preset).serial
        elif self.pki.find_pck(serial) is None:
            raise PkiError(f"no PCK certificate with serial {serial:x}")
        self.revoked_pck[serial] = self._clock()
        self._new_crls()
        return serial

    def unrevoke_pck(self, preset: str | tcb.PlatformTcb | None = None) -> None:
        """Take a PCK leaf off the CRL again and re-issue. Raises CollateralError, OSError."""
        self.revoked_pck.pop(self.pck_leaf(preset).serial, None)
        self._new_crls()

    def revoke_ca(self, which: str) -> int:
        """Put ``pck_platform_ca`` or ``tcb_signing`` on the root CA's CRL; returns its serial.

        Raises PkiError for another name, OSError when saving fails.
        """
        identities = {"pck_platform_ca": self.pki.platform_ca, "tcb_signing": self.pki.tcb_signing}
        if which not in identities:
            raise PkiError(f"cannot revoke {which!r} (use pck_platform_ca or tcb_signing)")
        serial = identities[which].serial
        self.revoked_ca[serial] = self._clock()
        self._new_crls()
        return serial

    def _new_crls(self) -> None:
        self.params = replace(self.params, crl_number=self.params.crl_number + 1)
        self.save()

    def reissue_collateral(
        self,
        *,
        issue_date: dt.datetime | None = None,
        next_update: dt.datetime | None = None,
        validity: dt.timedelta | None = None,
        tcb_levels: tuple[tcb.TcbLevel, ...] | None = None,
        statuses: Mapping[str, tcb.TcbStatus] | None = None,
        advisories: Mapping[str, tuple[str, ...]] | None = None,
        tcb_evaluation_data_number: int | None = None,
    ) -> None:
        """Re-sign the collateral with new dates and/or TCB levels, and save.

        ``issue_date`` defaults to an hour before now; ``next_update`` to issue date +
        ``validity`` (default 45 days). ``statuses`` and ``advisories`` change named levels
        of ``tcb_levels`` (default: the current ones). The CRL number goes up by one.
        Raises CollateralError for inconsistent values, OSError when saving fails.
        """
        now = self._clock()
        issued = issue_date or (now - coll.DEFAULT_BACKDATE)
        expires = next_update or (issued + (validity or coll.DEFAULT_VALIDITY))
        levels = tcb_levels if tcb_levels is not None else self.params.tcb_levels
        for name, status in (statuses or {}).items():
            levels = tcb.with_status(levels, name, status)
        for name, ids in (advisories or {}).items():
            current = {level.name: level for level in levels}
            if name not in current:
                raise CollateralError(f"no TCB level called {name!r}")
            levels = tcb.with_status(levels, name, current[name].status, ids)
        self.params = replace(
            self.params,
            issue_date=issued,
            next_update=expires,
            tcb_levels=levels,
            tcb_evaluation_data_number=(
                tcb_evaluation_data_number
                if tcb_evaluation_data_number is not None
                else self.params.tcb_evaluation_data_number
            ),
            crl_number=self.params.crl_number + 1,
        )
        self.save()
