"""The simulated PKI: Intel's shape, deterministic from the seed, keys private, CRLs right."""

from __future__ import annotations

import datetime as dt
import json
import stat
from collections.abc import Callable
from pathlib import Path

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tdx_boot_attest.tdxsim import der, sgx_extension, tcb
from tdx_boot_attest.tdxsim.errors import PkiError
from tdx_boot_attest.tdxsim.pki import Pki
from tdx_boot_attest.tdxsim.state import SimState

FMSPC = bytes.fromhex("00806F050000")


def test_same_seed_gives_identical_certificates() -> None:
    a = Pki.generate(5, FMSPC)
    b = Pki.generate(5, FMSPC)
    c = Pki.generate(6, FMSPC)

    assert a.root.der == b.root.der
    assert a.pck_leaf("uptodate").der == b.pck_leaf("uptodate").der
    assert a.root.der != c.root.der
    assert a.root.serial != c.root.serial


def test_chain_has_intels_shape(shared_state: SimState) -> None:
    pki = shared_state.pki
    root, ca, signer = (
        pki.root.certificate,
        pki.platform_ca.certificate,
        pki.tcb_signing.certificate,
    )
    leaf = pki.pck_leaf("uptodate").certificate

    def constraints(cert: x509.Certificate) -> x509.BasicConstraints:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value

    assert root.issuer == root.subject
    assert ca.issuer == signer.issuer == root.subject
    assert leaf.issuer == ca.subject
    assert (constraints(root).ca, constraints(root).path_length) == (True, 1)
    assert (constraints(ca).ca, constraints(ca).path_length) == (True, 0)
    assert not constraints(leaf).ca
    assert not constraints(signer).ca
    assert "Platform" in ca.subject.rfc4514_string()
    for cert in (root, ca, signer, leaf):
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
        assert cert.signature_hash_algorithm is not None
        assert cert.signature_hash_algorithm.name == "sha256"
        assert cert.not_valid_before_utc <= dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
        assert cert.not_valid_after_utc >= dt.datetime(2049, 1, 1, tzinfo=dt.UTC)
        cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)


def test_certificates_verify_up_the_chain(shared_state: SimState) -> None:
    pki = shared_state.pki
    pairs = [
        (pki.root, pki.root),
        (pki.platform_ca, pki.root),
        (pki.tcb_signing, pki.root),
        *[(leaf, pki.platform_ca) for leaf in pki.pck.values()],
    ]
    for child, parent in pairs:
        child.certificate.verify_directly_issued_by(parent.certificate)


@pytest.mark.parametrize("preset", sorted(tcb.PRESETS))
def test_pck_extension_as_dcap_qvl_reads_it(shared_state: SimState, preset: str) -> None:
    platform = tcb.PRESETS[preset]

    ext = dcap_qvl.parse_pck_extension_from_pem(shared_state.pki.pck_chain_pem(preset))

    assert ext.cpu_svn == platform.cpusvn
    assert ext.pce_svn == platform.pcesvn
    assert ext.fmspc == shared_state.fmspc
    assert ext.pce_id == b"\0\0"
    assert ext.sgx_type == sgx_extension.SGX_TYPE_SCALABLE
    assert len(ext.ppid) == 16
    assert ext.platform_instance_id is not None
    for i, svn in enumerate(platform.cpusvn, start=1):
        assert ext.get_value(f"1.2.840.113741.1.13.1.2.{i}") == der.integer(svn)[2:]


def test_sgx_extension_encoding_matches_a_real_intel_pck_certificate(vectors_dir: Path) -> None:
    quote = (vectors_dir / "tdx_quote").read_bytes()
    leaf_pem = (
        quote[1258:4936].split(b"-----END CERTIFICATE-----\n")[0] + b"-----END CERTIFICATE-----\n"
    )
    cert = x509.load_pem_x509_certificate(leaf_pem)
    raw = cert.extensions.get_extension_for_oid(
        x509.ObjectIdentifier(sgx_extension.SGX_EXTENSION_OID)
    ).value.value  # type: ignore[attr-defined]

    decoded = sgx_extension.decode(raw)

    assert sgx_extension.encode(decoded) == raw
    assert decoded.fmspc == bytes.fromhex("B0C06F000000")
    assert decoded.cpusvn == bytes.fromhex("03030202040100050000000000000000")
    assert decoded.pcesvn == 11


def test_der_integers_are_minimal_twos_complement() -> None:
    assert der.integer(0) == bytes.fromhex("020100")
    assert der.integer(127) == bytes.fromhex("02017f")
    assert der.integer(128) == bytes.fromhex("02020080")
    assert der.integer(255) == bytes.fromhex("020200ff")
    assert der.integer(256) == bytes.fromhex("02020100")
    assert der.oid("1.2.840.113741.1.13.1") == bytes.fromhex("06092a864886f84d010d01")
    assert der.read_one(der.oid("1.2.840.113741.1.13.1.2.17"))[0].as_oid() == (
        "1.2.840.113741.1.13.1.2.17"
    )


def test_private_keys_are_owner_only(shared_state: SimState) -> None:
    key_files = sorted((shared_state.path / "pki").rglob("*.key.pem"))

    assert len(key_files) == 3 + len(tcb.PRESETS) + 1
    for path in key_files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_load_refuses_a_key_that_does_not_match(make_state: Callable[..., SimState]) -> None:
    state = make_state()
    pki_dir = state.path / "pki"
    (pki_dir / "root_ca.key.pem").write_bytes((pki_dir / "tcb_signing.key.pem").read_bytes())

    with pytest.raises(PkiError, match="does not match"):
        Pki.load(pki_dir)


def test_revocation_lists_carry_revoked_serials(make_state: Callable[..., SimState]) -> None:
    state = make_state()
    serial = state.revoke_pck("outofdate")

    coll = json.loads(state.collateral_json)
    pck_crl = x509.load_der_x509_crl(bytes.fromhex(coll["pck_crl"]))
    root_crl = x509.load_der_x509_crl(bytes.fromhex(coll["root_ca_crl"]))

    assert [r.serial_number for r in pck_crl] == [serial]
    assert list(root_crl) == []
    assert pck_crl.issuer == state.pki.platform_ca.certificate.subject
    assert pck_crl.is_signature_valid(state.pki.platform_ca.key.public_key())
    assert root_crl.is_signature_valid(state.pki.root.key.public_key())
    assert pck_crl.next_update_utc == state.params.next_update
    number = pck_crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number == 2  # each new CRL gets the next number
