"""Real Intel evidence: the vectors' TDX quote verifies inside its window, nowhere else."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tdx_boot_attest.server.app import create_app
from tdx_boot_attest.server.collateral import parse_collateral
from tdx_boot_attest.server.collateral_cache import import_collateral
from tdx_boot_attest.server.context import load_trust_root
from tdx_boot_attest.server.db.engine import make_engine, make_sessionmaker, session_scope
from tdx_boot_attest.server.db.models import BootAttestation, Nonce
from tdx_boot_attest.server.dcap import verify_dcap
from tdx_boot_attest.server.images import profile_from_quote, read_quote_file
from tdx_boot_attest.server.sealing import generate_master_key_file
from tdx_boot_attest.server.settings import Settings
from tests.support.sim_server import FrozenClock, register_image
from tests.support.uvicorn_thread import serve_in_thread

INSIDE = dt.datetime.fromtimestamp(1750329147 + 86400, dt.UTC)
BEFORE = dt.datetime.fromtimestamp(1750329147 - 60, dt.UTC)
AFTER = dt.datetime.fromtimestamp(1752919235 + 60, dt.UTC)
INTEL_ROOT_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"


def test_intel_root_fingerprint_and_both_encodings(tmp_path: Path, vectors_dir: Path) -> None:
    der = (vectors_dir / "intel_sgx_root_ca.der").read_bytes()
    assert hashlib.sha256(der).hexdigest() == INTEL_ROOT_SHA256
    pem_file = tmp_path / "root.pem"
    pem_file.write_bytes(
        b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE-----\n"
    )
    assert load_trust_root(vectors_dir / "intel_sgx_root_ca.der") == der
    assert load_trust_root(pem_file) == der


def test_default_trust_root_is_intel(vectors_dir: Path) -> None:
    """Without a configured root, verification uses Intel's (the real quote passes)."""
    quote = (vectors_dir / "tdx_quote").read_bytes()
    collateral = parse_collateral((vectors_dir / "tdx_quote_collateral.json").read_text())
    verdict = verify_dcap(quote, collateral.for_dcap(), None, INSIDE)
    assert verdict.tcb_status == "UpToDate"
    explicit = (vectors_dir / "intel_sgx_root_ca.der").read_bytes()
    assert verify_dcap(quote, collateral.for_dcap(), explicit, INSIDE) == verdict


def _post_real_quote(
    tmp_path: Path,
    database_url: str,
    vectors_dir: Path,
    when: dt.datetime,
    quote_name: str = "tdx_quote",
) -> httpx.Response:
    quote = (vectors_dir / quote_name).read_bytes()
    collateral_file = (
        "tdx_quote_collateral.json"
        if quote_name == "tdx_quote"
        else f"{quote_name}_collateral.json"
    )
    engine = make_engine(database_url, pool_size=1)
    sessions = make_sessionmaker(engine)
    import_collateral(sessions, (vectors_dir / collateral_file).read_text(), when)
    key_file = tmp_path / "master.key"
    generate_master_key_file(key_file)
    settings = Settings(
        database_url=database_url, master_key_file=key_file, pccs_url="http://127.0.0.1:9"
    )
    golden = read_quote_file((vectors_dir / "tdx_quote").read_bytes())
    register_image(
        settings, "real-vm", golden_profile=profile_from_quote(golden), passphrase=b"luks-pw-real"
    )
    # The quote's REPORTDATA was fixed when it was taken: its first half is made a nonce
    # this server issued, so every check up to the public-key binding can run.
    with session_scope(sessions) as session:
        session.add(
            Nonce(
                nonce=golden.report_data[:32].hex(),
                scope="boot",
                created_at=when,
                expires_at=when + dt.timedelta(minutes=10),
                client_ip="127.0.0.1",
            )
        )
    engine.dispose()
    app = create_app(settings, clock=FrozenClock(when))
    with serve_in_thread(app) as base_url:
        response = httpx.post(
            base_url + "/servers/boot/attestation",
            headers={"X-Chutes-Nonce": golden.report_data[:32].hex()},
            json={
                "quote": base64.b64encode(quote).decode(),
                "public_key": base64.b64encode(bytes(32)).decode(),
            },
            timeout=30,
        )
    app.state.ctx.engine.dispose()
    return response


def test_real_quote_verifies_inside_window(
    tmp_path: Path, database_url: str, vectors_dir: Path
) -> None:
    response = _post_real_quote(tmp_path, database_url, vectors_dir, INSIDE)
    # Signature, chain, CRLs, TCB, debug bit and measurements all pass; only the
    # agent-key binding remains, which no test can satisfy for a quote taken elsewhere.
    assert response.status_code == 403, response.text
    assert response.json()["reason"] == "report_data_mismatch"
    engine = make_engine(database_url, pool_size=1)
    with session_scope(make_sessionmaker(engine)) as session:
        row = session.scalars(select(BootAttestation)).one()
        assert row.tcb_status == "UpToDate"
        assert row.image_name == "real-vm"
        assert row.advisory_ids == "[]"
    engine.dispose()


@pytest.mark.parametrize("when", [BEFORE, AFTER], ids=["before", "after"])
def test_real_quote_refused_outside_window(
    tmp_path: Path, database_url: str, vectors_dir: Path, when: dt.datetime
) -> None:
    response = _post_real_quote(tmp_path, database_url, vectors_dir, when)
    assert response.status_code == 503, response.text
    assert response.json()["reason"] == "collateral_unavailable"


def test_real_sgx_quote_is_not_tdx(tmp_path: Path, database_url: str, vectors_dir: Path) -> None:
    response = _post_real_quote(tmp_path, database_url, vectors_dir, INSIDE, quote_name="sgx_quote")
    assert response.status_code == 403, response.text
    assert response.json()["reason"] == "not_tdx"


def test_real_outdated_v5_quote_has_no_tcb_level(
    tmp_path: Path, database_url: str, vectors_dir: Path
) -> None:
    when = dt.datetime.fromtimestamp(1771412331 + 3600, dt.UTC)
    response = _post_real_quote(
        tmp_path, database_url, vectors_dir, when, quote_name="tdx_quote_outdated"
    )
    assert response.status_code == 403, response.text
    assert response.json()["reason"] == "tcb_status_rejected"
