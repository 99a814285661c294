"""The simulated Intel PKI: root CA, PCK platform CA, TCB signing certificate, PCK leaves, CRLs.

Shaped like Intel's SGX PKI (ECDSA P-256 with SHA-256 everywhere, the same extensions and
path lengths), with "Simulated" names so a simulated chain is never mistaken for a real
one. Keys come from the seed (tdxsim.keys), certificates are signed with deterministic
ECDSA (RFC 6979), serial numbers are derived and validity is fixed and back-dated, so
one seed always gives byte-identical certificates.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tdx_boot_attest.tdxsim import keys, sgx_extension, tcb
from tdx_boot_attest.tdxsim.errors import PkiError

NOT_BEFORE: Final = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
NOT_AFTER: Final = dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
# Where a verifier would fetch CRLs from; the simulator's PCS endpoint serves these paths.
CRL_BASE_URL: Final = "https://pcs.tdxsim.invalid"
ROOT_CRL_URL: Final = CRL_BASE_URL + "/sgx/certification/v4/rootcacrl"
PCK_CRL_URL: Final = CRL_BASE_URL + "/sgx/certification/v4/pckcrl?ca=platform&encoding=der"
PCE_ID: Final = b"\x00\x00"


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tdxsim Simulated Corporation"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
    )


ROOT_NAME: Final = _name("Simulated SGX Root CA")
PLATFORM_CA_NAME: Final = _name("Simulated SGX PCK Platform CA")
TCB_SIGNING_NAME: Final = _name("Simulated SGX TCB Signing")
PCK_NAME: Final = _name("Simulated SGX PCK Certificate")


@dataclass(frozen=True, slots=True)
class Identity:
    """A certificate and its private key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        """The certificate in DER. Raises nothing."""
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        """The certificate in PEM. Raises nothing."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def serial(self) -> int:
        """The certificate's serial number. Raises nothing."""
        return self.certificate.serial_number


def _sign(
    builder: x509.CertificateBuilder, issuer_key: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    return builder.sign(issuer_key, hashes.SHA256(), ecdsa_deterministic=True)


def _certificate(
    *,
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    serial: int,
    crl_url: str,
    ca_path_length: int | None,
    is_ca: bool,
    extra: Iterable[x509.ExtensionType] = (),
) -> x509.Certificate:
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(serial)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(crl_url)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not is_ca,
                content_commitment=not is_ca,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=ca_path_length), critical=True)
    )
    for ext in extra:
        builder = builder.add_extension(ext, critical=False)
    return _sign(builder, issuer_key)


def pck_extension_for(
    seed: int, fmspc: bytes, platform: tcb.PlatformTcb
) -> sgx_extension.PckExtension:
    """The SGX extension of the PCK certificate for ``platform``. Raises PkiError."""
    return sgx_extension.PckExtension(
        ppid=keys.derive_bytes(seed, "ppid", 16),
        cpusvn=platform.cpusvn,
        pcesvn=platform.pcesvn,
        pce_id=PCE_ID,
        fmspc=fmspc,
        sgx_type=sgx_extension.SGX_TYPE_SCALABLE,
        platform_instance_id=keys.derive_bytes(seed, "platform instance id", 16),
    )


def pck_label(platform: tcb.PlatformTcb) -> str:
    """The derivation label of the PCK leaf for ``platform``. Raises nothing.

    Presets keep their name; any other TCB is named by its values, so the same values
    always give the same certificate.
    """
    if tcb.PRESETS.get(platform.name) == platform:
        return "pck leaf " + platform.name
    return f"pck leaf custom {platform.cpusvn.hex()} {platform.pcesvn} {platform.tee_tcb_svn.hex()}"


def issue_pck_leaf(
    seed: int, fmspc: bytes, platform: tcb.PlatformTcb, platform_ca: Identity
) -> Identity:
    """The PCK leaf certificate of ``platform``, issued by ``platform_ca``. Raises PkiError."""
    label = pck_label(platform)
    leaf_key = keys.derive_p256_key(seed, label)
    extension = sgx_extension.encode(pck_extension_for(seed, fmspc, platform))
    return Identity(
        _certificate(
            subject=PCK_NAME,
            issuer=platform_ca.certificate.subject,
            key=leaf_key,
            issuer_key=platform_ca.key,
            serial=keys.derive_serial(seed, label),
            crl_url=PCK_CRL_URL,
            ca_path_length=None,
            is_ca=False,
            extra=[
                x509.UnrecognizedExtension(
                    x509.ObjectIdentifier(sgx_extension.SGX_EXTENSION_OID), extension
                )
            ],
        ),
        leaf_key,
    )


@dataclass(frozen=True, slots=True)
class Pki:
    """The whole simulated PKI of one platform: CAs, TCB signer and one PCK leaf per preset."""

    root: Identity
    platform_ca: Identity
    tcb_signing: Identity
    pck: Mapping[str, Identity]

    @classmethod
    def generate(cls, seed: int, fmspc: bytes) -> Pki:
        """Build every certificate from ``seed``; raises PkiError for a bad FMSPC."""
        if len(fmspc) != 6:
            raise PkiError("FMSPC must be 6 bytes")
        root_key = keys.derive_p256_key(seed, "root ca")
        root_cert = _certificate(
            subject=ROOT_NAME,
            issuer=ROOT_NAME,
            key=root_key,
            issuer_key=root_key,
            serial=keys.derive_serial(seed, "root ca"),
            crl_url=ROOT_CRL_URL,
            ca_path_length=1,
            is_ca=True,
        )
        root = Identity(root_cert, root_key)
        ca_key = keys.derive_p256_key(seed, "pck platform ca")
        platform_ca = Identity(
            _certificate(
                subject=PLATFORM_CA_NAME,
                issuer=ROOT_NAME,
                key=ca_key,
                issuer_key=root_key,
                serial=keys.derive_serial(seed, "pck platform ca"),
                crl_url=ROOT_CRL_URL,
                ca_path_length=0,
                is_ca=True,
            ),
            ca_key,
        )
        tcb_key = keys.derive_p256_key(seed, "tcb signing")
        tcb_signing = Identity(
            _certificate(
                subject=TCB_SIGNING_NAME,
                issuer=ROOT_NAME,
                key=tcb_key,
                issuer_key=root_key,
                serial=keys.derive_serial(seed, "tcb signing"),
                crl_url=ROOT_CRL_URL,
                ca_path_length=None,
                is_ca=False,
            ),
            tcb_key,
        )
        pck = {
            name: issue_pck_leaf(seed, fmspc, platform, platform_ca)
            for name, platform in tcb.PRESETS.items()
        }
        return cls(root=root, platform_ca=platform_ca, tcb_signing=tcb_signing, pck=pck)

    def pck_leaf(self, preset: str) -> Identity:
        """The PCK leaf for platform TCB ``preset``; raises PkiError when there is none."""
        try:
            return self.pck[preset]
        except KeyError:
            raise PkiError(f"no PCK certificate for platform TCB {preset!r}") from None

    def pck_chain_pem(self, preset: str) -> bytes:
        """PEM chain PCK leaf, platform CA, root (as a quote's type 5 data). Raises PkiError."""
        return self.pck_leaf(preset).pem + self.platform_ca.pem + self.root.pem

    def find_pck(self, serial: int) -> str | None:
        """The preset whose PCK leaf has ``serial``, or None. Raises nothing."""
        for name, identity in self.pck.items():
            if identity.serial == serial:
                return name
        return None

    # -- persistence ------------------------------------------------------------------

    def _entries(self) -> dict[str, Identity]:
        entries = {
            "root_ca": self.root,
            "pck_platform_ca": self.platform_ca,
            "tcb_signing": self.tcb_signing,
        }
        entries |= {f"pck/{name}": identity for name, identity in self.pck.items()}
        return entries

    def save(self, directory: Path) -> None:
        """Write certificates (DER) and keys (PEM, mode 0600) under ``directory``.

        Raises OSError when the files cannot be written.
        """
        for stem, identity in self._entries().items():
            cert_path = directory / f"{stem}.der"
            cert_path.parent.mkdir(parents=True, exist_ok=True)
            cert_path.write_bytes(identity.der)
            key_pem = identity.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            write_private(directory / f"{stem}.key.pem", key_pem)

    @classmethod
    def load(cls, directory: Path) -> Pki:
        """Read a PKI written by save(); raises PkiError when a file is missing or bad."""

        def identity(stem: str) -> Identity:
            try:
                cert = x509.load_der_x509_certificate((directory / f"{stem}.der").read_bytes())
                key = serialization.load_pem_private_key(
                    (directory / f"{stem}.key.pem").read_bytes(), password=None
                )
            except (OSError, ValueError, UnsupportedAlgorithm) as exc:
                raise PkiError(f"cannot read {stem} from {directory}: {exc}") from None
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise PkiError(f"{stem} key is not an EC key")
            if key.public_key() != cert.public_key():
                raise PkiError(f"{stem} key does not match its certificate")
            return Identity(cert, key)

        return cls(
            root=identity("root_ca"),
            platform_ca=identity("pck_platform_ca"),
            tcb_signing=identity("tcb_signing"),
            pck={name: identity(f"pck/{name}") for name in tcb.PRESETS},
        )

    # -- revocation lists ----------------------------------------------------------------

    def root_crl(
        self,
        revoked: Mapping[int, dt.datetime],
        this_update: dt.datetime,
        next_update: dt.datetime,
        number: int,
    ) -> bytes:
        """The root CA's CRL (DER) listing ``revoked`` serials. Raises nothing."""
        return _crl(self.root, revoked, this_update, next_update, number)

    def pck_crl(
        self,
        revoked: Mapping[int, dt.datetime],
        this_update: dt.datetime,
        next_update: dt.datetime,
        number: int,
    ) -> bytes:
        """The PCK platform CA's CRL (DER) listing ``revoked`` serials. Raises nothing."""
        return _crl(self.platform_ca, revoked, this_update, next_update, number)


def _crl(
    issuer: Identity,
    revoked: Mapping[int, dt.datetime],
    this_update: dt.datetime,
    next_update: dt.datetime,
    number: int,
) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.certificate.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    for serial, when in sorted(revoked.items()):
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(when)
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
            .build()
        )
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(issuer.key, hashes.SHA256(), ecdsa_deterministic=True)
    return crl.public_bytes(serialization.Encoding.DER)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by the owner only (0600 from creation).

    Raises OSError when the file cannot be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
