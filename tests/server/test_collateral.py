"""Collateral: validity windows, the PCS fetcher over real HTTP, the cache across outages."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dcap_qvl
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from server.collateral import CollateralError, PcsCollateralFetcher, parse_collateral
from server.db.engine import make_engine, make_sessionmaker, session_scope
from server.db.models import CollateralCacheEntry
from tdxsim.pcs import PcsCollateral, PcsServer
from tdxsim.state import SimState
from tests.support.sim_server import FrozenClock, sim_server


def test_window_of_real_collateral(vectors_dir: Path) -> None:
    collateral = parse_collateral((vectors_dir / "tdx_quote_collateral.json").read_text())
    assert collateral.fmspc == "b0c06f000000"
    assert collateral.ca == "platform"
    assert int(collateral.issued_at.timestamp()) == 1750329147
    assert int(collateral.next_update.timestamp()) == 1752919235


@pytest.mark.parametrize("broken", ["not json", "{}", json.dumps({"tcb_info": "x"})])
def test_unusable_collateral_is_refused(broken: str) -> None:
    with pytest.raises(CollateralError):
        parse_collateral(broken)


def test_fetcher_assembles_verifiable_collateral(sim: SimState) -> None:
    with PcsServer(PcsCollateral.from_state(sim)) as pcs:
        text = PcsCollateralFetcher(pcs.url + "/sgx/certification/v4/")(sim.fmspc.hex(), "platform")
    collateral = parse_collateral(text)
    assert collateral.fmspc == sim.fmspc.hex()
    quote = sim.make_quote(bytes(64))
    now = int(dt.datetime.now(dt.UTC).timestamp())
    report = dcap_qvl.verify_with_root_ca(quote, collateral.for_dcap(), sim.root_ca_der, now)
    assert report.status == "UpToDate"


def test_fetcher_reports_unreachable_service() -> None:
    fetcher = PcsCollateralFetcher("http://127.0.0.1:9", timeout=2)
    with pytest.raises(CollateralError, match="unreachable"):
        fetcher("00806f050000", "platform")


def test_fetcher_reports_error_status(sim: SimState) -> None:
    with PcsServer(PcsCollateral.from_state(sim)) as pcs:
        pcs.fail(503)
        with pytest.raises(CollateralError, match="503"):
            PcsCollateralFetcher(pcs.url)(sim.fmspc.hex(), "platform")


def test_fetcher_refuses_unknown_fmspc(sim: SimState) -> None:
    with (
        PcsServer(PcsCollateral.from_state(sim)) as pcs,
        pytest.raises(CollateralError, match="404"),
    ):
        PcsCollateralFetcher(pcs.url)("112233445566", "platform")


def _cache_rows(database_url: str) -> list[CollateralCacheEntry]:
    engine = make_engine(database_url, pool_size=1)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            return list(session.scalars(select(CollateralCacheEntry)))
    finally:
        engine.dispose()


def test_pcs_outage_and_recovery(tmp_path: Path, database_url: str, sim: SimState) -> None:
    """Fetched once, served from cache while the PCS is down, refused after expiry, back after."""
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    sim.reissue_collateral(
        issue_date=start - dt.timedelta(hours=1), next_update=start + dt.timedelta(days=2)
    )
    clock = FrozenClock(start)
    with (
        PcsServer(PcsCollateral.from_state(sim)) as pcs,
        sim_server(
            tmp_path,
            database_url,
            sim,
            clock=clock,
            import_sim_collateral=False,
            pccs_url=pcs.url,
            collateral_refresh_margin_seconds=6 * 3600,
        ) as srv,
    ):
        srv.register_image("golden")
        response, _, _ = srv.boot()
        assert response.status_code == 200, response.text
        fetched = len(pcs.requests)
        assert fetched >= 4
        assert [row.source for row in _cache_rows(database_url)] == ["fetched"]

        # Fresh cache: no refetch.
        clock.advance(hours=12)
        assert srv.boot()[0].status_code == 200
        assert len(pcs.requests) == fetched

        # Inside the refresh margin with the PCS down: the cached copy keeps serving.
        pcs.go_down()
        clock.advance(hours=31)
        response, _, _ = srv.boot()
        assert response.status_code == 200, response.text

        # Past nextUpdate: never verified against expired collateral.
        clock.advance(hours=6)
        response, _, _ = srv.boot()
        assert response.status_code == 503, response.text
        assert response.json()["reason"] == "collateral_unavailable"

        # The PCS comes back with re-issued collateral: served again.
        sim.reissue_collateral(
            issue_date=clock() - dt.timedelta(hours=1),
            next_update=clock() + dt.timedelta(days=30),
        )
        pcs.collateral = PcsCollateral.from_state(sim)
        pcs.come_back()
        response, _, _ = srv.boot()
        assert response.status_code == 200, response.text
        rows = _cache_rows(database_url)
        assert rows[0].next_update == clock() + dt.timedelta(days=30)


def test_refresh_ahead_of_expiry(tmp_path: Path, database_url: str, sim: SimState) -> None:
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    sim.reissue_collateral(
        issue_date=start - dt.timedelta(hours=1), next_update=start + dt.timedelta(days=1)
    )
    clock = FrozenClock(start)
    with (
        PcsServer(PcsCollateral.from_state(sim)) as pcs,
        sim_server(
            tmp_path,
            database_url,
            sim,
            clock=clock,
            import_sim_collateral=False,
            pccs_url=pcs.url,
            collateral_refresh_margin_seconds=3600,
        ) as srv,
    ):
        srv.register_image("golden")
        assert srv.boot()[0].status_code == 200
        sim.reissue_collateral(issue_date=start, next_update=start + dt.timedelta(days=10))
        pcs.go_down()
        pcs.collateral = PcsCollateral.from_state(sim)
        pcs.come_back()
        clock.advance(hours=23, minutes=30)
        assert srv.boot()[0].status_code == 200
        assert _cache_rows(database_url)[0].next_update == start + dt.timedelta(days=10)


def test_pcs_error_status_with_empty_cache(
    tmp_path: Path, database_url: str, sim: SimState
) -> None:
    with (
        PcsServer(PcsCollateral.from_state(sim)) as pcs,
        sim_server(
            tmp_path, database_url, sim, import_sim_collateral=False, pccs_url=pcs.url
        ) as srv,
    ):
        pcs.fail(500)
        srv.register_image("golden")
        response, _, _ = srv.boot()
        assert response.status_code == 503
        assert response.json()["reason"] == "collateral_unavailable"
        assert "Retry-After" in response.headers


def test_metrics_report_collateral_age(tmp_path: Path, database_url: str, sim: SimState) -> None:
    with sim_server(tmp_path, database_url, sim) as srv:
        srv.register_image("golden")
        srv.boot()
        text = httpx.get(srv.base_url + "/metrics").text
    assert f'tdx_attest_collateral_age_seconds{{ca="platform",fmspc="{sim.fmspc.hex()}"}}' in text
    assert 'tdx_attest_attestations_total{kind="boot",reason="",verdict="accepted"} 1.0' in text
    assert "tdx_attest_dcap_verification_seconds_count 1.0" in text


@pytest.mark.parametrize("form", ["der", "pem", "hex", "hex-newline"])
def test_crl_bodies_in_every_form(sim: SimState, form: str) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    from server.collateral import _crl_der

    der = bytes.fromhex(json.loads(sim.collateral_json)["pck_crl"])
    crl = x509.load_der_x509_crl(der)
    bodies = {
        "der": der,
        "pem": crl.public_bytes(Encoding.PEM),
        "hex": der.hex().encode(),
        "hex-newline": der.hex().upper().encode() + b"\n",
    }
    assert _crl_der(bodies[form]) == der


def test_der_crl_ending_in_a_whitespace_byte_is_kept_whole() -> None:
    """A DER body is never trimmed: the last byte of its signature may be 0x20 or 0x0a."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from server.collateral import _crl_der

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test PCK Platform CA")])
    now = dt.datetime.now(dt.UTC)
    for _ in range(2000):
        der = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(name)
            .last_update(now)
            .next_update(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.DER)
        )
        if der[-1:] in (b" ", b"\t", b"\n", b"\r", b"\x0b", b"\x0c"):
            break
    else:
        pytest.fail("no CRL ending in a whitespace byte was produced")
    assert _crl_der(der) == der
