"""Collateral: validity windows, the PCS fetcher over real HTTP, the cache across outages."""

from __future__ import annotations

import datetime as dt
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dcap_qvl
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Engine, select

from tdx_boot_attest.server.collateral import (
    CollateralError,
    CollateralNotFound,
    PcsCollateralFetcher,
    parse_collateral,
)
from tdx_boot_attest.server.collateral_cache import (
    CollateralCache,
    CollateralPolicy,
    import_collateral,
)
from tdx_boot_attest.server.db.engine import make_engine, make_sessionmaker, session_scope
from tdx_boot_attest.server.db.models import CollateralCacheEntry
from tdx_boot_attest.server.errors import CollateralUnavailable
from tdx_boot_attest.tdxsim.pcs import PcsCollateral, PcsServer
from tdx_boot_attest.tdxsim.state import SimState
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
        # The refresh runs in the background while the still-valid copy serves.
        assert srv.app.state.ctx.collateral.wait_for_refreshes(60)
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

    from tdx_boot_attest.server.collateral import _crl_der

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

    from tdx_boot_attest.server.collateral import _crl_der

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


def test_a_fetch_has_one_total_deadline(sim: SimState) -> None:
    """A service sending one byte at a time cannot hold a fetch past its deadline."""
    with PcsServer(PcsCollateral.from_state(sim)) as pcs:
        pcs.set_trickle(2)
        try:
            with pytest.raises(CollateralError, match="did not deliver within 1 s"):
                PcsCollateralFetcher(pcs.url, timeout=1)(sim.fmspc.hex(), "platform")
        finally:
            pcs.clear_faults()


class BlockingFetcher:
    """A collateral fetcher that waits until released, counting its calls."""

    def __init__(self, text: str | None, error: CollateralError | None = None) -> None:
        self.text = text
        self.error = error
        self.calls = 0
        self.release = threading.Event()
        self.entered = threading.Event()

    def __call__(self, fmspc: str, ca: str) -> str:
        self.calls += 1
        self.entered.set()
        self.release.wait(60)
        if self.error is not None:
            raise self.error
        assert self.text is not None
        return self.text


def _cache(
    database_url: str, fetcher: BlockingFetcher, margin: dt.timedelta
) -> tuple[CollateralCache, Engine]:
    engine = make_engine(database_url, pool_size=5)
    policy = CollateralPolicy(
        refresh_margin=margin, retry_after_seconds=60, fetch_timeout_seconds=30
    )
    return CollateralCache(make_sessionmaker(engine), fetcher, policy), engine


def test_valid_collateral_serves_while_its_one_refresh_runs(
    database_url: str, sim: SimState
) -> None:
    now = dt.datetime.now(dt.UTC)
    engine = make_engine(database_url, pool_size=1)
    import_collateral(make_sessionmaker(engine), sim.collateral_json, now)
    engine.dispose()
    fetcher = BlockingFetcher(sim.collateral_json)
    cache, engine = _cache(database_url, fetcher, margin=dt.timedelta(days=1000))
    try:
        with ThreadPoolExecutor(max_workers=10) as pool:
            served = list(
                pool.map(lambda _: cache.get(sim.fmspc.hex(), "platform", now), range(10))
            )
        # Every call returned while the fetcher was still blocked: none waited on it.
        assert not fetcher.release.is_set()
        assert all(collateral.fmspc == sim.fmspc.hex() for collateral, _ in served)
        assert fetcher.entered.wait(60)
        assert fetcher.calls == 1
    finally:
        fetcher.release.set()
        assert cache.wait_for_refreshes(60)
        engine.dispose()


def test_without_valid_collateral_callers_join_the_fetch_in_flight(
    database_url: str, sim: SimState
) -> None:
    now = dt.datetime.now(dt.UTC)
    fetcher = BlockingFetcher(sim.collateral_json)
    cache, engine = _cache(database_url, fetcher, margin=dt.timedelta(hours=1))
    try:
        with ThreadPoolExecutor(max_workers=10) as pool:
            pending = [pool.submit(cache.get, sim.fmspc.hex(), "platform", now) for _ in range(10)]
            assert fetcher.entered.wait(60)
            fetcher.release.set()
            results = [future.result() for future in pending]
        assert all(collateral.fmspc == sim.fmspc.hex() for collateral, _ in results)
        assert fetcher.calls == 1
    finally:
        fetcher.release.set()
        engine.dispose()


def test_a_platform_the_service_does_not_know_is_remembered(
    database_url: str, sim: SimState
) -> None:
    now = dt.datetime.now(dt.UTC)
    fetcher = BlockingFetcher(None, CollateralNotFound("no TCB info for this FMSPC (404)"))
    fetcher.release.set()
    cache, engine = _cache(database_url, fetcher, margin=dt.timedelta(hours=1))
    try:
        for _ in range(3):
            with pytest.raises(CollateralUnavailable):
                cache.get("00a06f000000", "platform", now)
        assert fetcher.calls == 1
    finally:
        engine.dispose()
