"""Every refusal of POST /servers/boot/attestation, each by its own test, over real HTTP."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tdx_boot_attest.agent import quote_layout as layout
from tdx_boot_attest.agent.protocol import MAX_QUOTE_BYTES
from tdx_boot_attest.server.collateral_cache import import_collateral
from tdx_boot_attest.server.db.engine import make_engine, make_sessionmaker
from tdx_boot_attest.tdxsim import tcb
from tdx_boot_attest.tdxsim.profile import Profile
from tdx_boot_attest.tdxsim.state import SimState
from tests.support.boot_client import AgentKey, get_nonce, post_quote
from tests.support.sim_server import SimServer, sim_server

# A v4 quote: the header, the TD 1.0 report body, then the signature data.
SIGNED_BYTES = layout.HEADER_BYTES + layout.TD_REPORT10_BYTES


@pytest.fixture
def srv(tmp_path: Path, database_url: str, sim: SimState) -> Iterator[SimServer]:
    with sim_server(tmp_path, database_url, sim) as server:
        server.register_image("golden")
        yield server


def assert_refused(response: httpx.Response, status: int, reason: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["reason"] == reason
    assert body["detail"] == f"{reason}: {body['message']}"
    assert "sealed_key" not in body
    return str(body["message"])


def reimport(srv: SimServer) -> None:
    engine = make_engine(srv.settings.database_url, pool_size=1)
    import_collateral(make_sessionmaker(engine), srv.sim.collateral_json, srv.clock())
    engine.dispose()


def honest_quote(srv: SimServer, **quote_kw: object) -> tuple[bytes, bytes, AgentKey]:
    key = AgentKey.generate()
    nonce = get_nonce(srv.client)
    return srv.quote_for(nonce, key, **quote_kw), nonce, key  # type: ignore[arg-type]


# -- nonces --------------------------------------------------------------------------------


def test_missing_nonce_header(srv: SimServer) -> None:
    quote, _, key = honest_quote(srv)
    assert_refused(post_quote(srv.client, quote, key, None), 401, "nonce_missing")


def test_unknown_nonce(srv: SimServer) -> None:
    key = AgentKey.generate()
    nonce = secrets.token_bytes(32)
    response = post_quote(srv.client, srv.quote_for(nonce, key), key, nonce.hex())
    assert_refused(response, 401, "nonce_unknown")


def test_nonce_header_that_is_not_a_nonce(srv: SimServer) -> None:
    quote, _, key = honest_quote(srv)
    assert_refused(post_quote(srv.client, quote, key, "zz" * 8), 401, "nonce_unknown")


def test_expired_nonce(srv: SimServer) -> None:
    quote, nonce, key = honest_quote(srv)
    srv.clock.advance(seconds=srv.settings.nonce_ttl_seconds + 1)
    assert_refused(post_quote(srv.client, quote, key, nonce.hex()), 401, "nonce_expired")


def test_reused_nonce(srv: SimServer) -> None:
    quote, nonce, key = honest_quote(srv)
    assert post_quote(srv.client, quote, key, nonce.hex()).status_code == 200
    assert_refused(post_quote(srv.client, quote, key, nonce.hex()), 401, "nonce_used")


def test_header_nonce_differs_from_reportdata(srv: SimServer) -> None:
    quote, _, key = honest_quote(srv)
    other = get_nonce(srv.client)
    message = assert_refused(post_quote(srv.client, quote, key, other.hex()), 403, "nonce_mismatch")
    assert "REPORTDATA[0:32]" in message


def test_public_key_differs_from_reportdata(srv: SimServer) -> None:
    quote, nonce, _ = honest_quote(srv)
    message = assert_refused(
        post_quote(srv.client, quote, AgentKey.generate(), nonce.hex()), 403, "report_data_mismatch"
    )
    assert "REPORTDATA[32:64]" in message


# -- malformed input -----------------------------------------------------------------------


def test_corrupt_quote(srv: SimServer) -> None:
    quote, nonce, key = honest_quote(srv)
    # Header and body intact, the signature data (from its size field on) random.
    keep = SIGNED_BYTES + 8
    corrupt = quote[:keep] + secrets.token_bytes(len(quote) - keep)
    assert_refused(post_quote(srv.client, corrupt, key, nonce.hex()), 422, "quote_malformed")


def test_truncated_quote(srv: SimServer) -> None:
    quote, nonce, key = honest_quote(srv)
    assert_refused(
        post_quote(srv.client, quote[: SIGNED_BYTES + 68], key, nonce.hex()), 422, "quote_malformed"
    )


def test_oversized_quote(srv: SimServer) -> None:
    quote, nonce, key = honest_quote(srv)
    big = quote + bytes(MAX_QUOTE_BYTES)
    assert_refused(post_quote(srv.client, big, key, nonce.hex()), 422, "quote_too_large")


def test_non_base64_quote(srv: SimServer) -> None:
    _, nonce, key = honest_quote(srv)
    response = post_quote(srv.client, "this is not base64!", key, nonce.hex())
    assert_refused(response, 422, "quote_malformed")


def test_missing_quote_field(srv: SimServer) -> None:
    nonce = get_nonce(srv.client)
    response = srv.client.post(
        "/servers/boot/attestation",
        json={"public_key": AgentKey.generate().public_b64},
        headers={"X-Chutes-Nonce": nonce.hex()},
    )
    message = assert_refused(response, 422, "request_invalid")
    assert "quote" in message


def test_body_that_is_not_json(srv: SimServer) -> None:
    response = srv.client.post(
        "/servers/boot/attestation",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert_refused(response, 422, "request_invalid")


def test_public_key_of_wrong_length(srv: SimServer) -> None:
    quote, nonce, _ = honest_quote(srv)
    response = srv.client.post(
        "/servers/boot/attestation",
        json={
            "quote": base64.b64encode(quote).decode(),
            "public_key": base64.b64encode(b"k" * 31).decode(),
        },
        headers={"X-Chutes-Nonce": nonce.hex()},
    )
    assert_refused(response, 422, "public_key_invalid")


def test_unsupported_kem(srv: SimServer) -> None:
    quote, nonce, key = honest_quote(srv)
    response = post_quote(srv.client, quote, key, nonce.hex(), kem="rsa-oaep")
    assert_refused(response, 422, "kem_unsupported")


def test_unsupported_quote_version(srv: SimServer) -> None:
    quote, nonce, key = honest_quote(srv)
    version = layout.HEADER_VERSION
    version3 = quote[: version.offset] + (3).to_bytes(version.size, "little") + quote[version.end :]
    response = post_quote(srv.client, version3, key, nonce.hex())
    assert_refused(response, 403, "quote_version_unsupported")


def test_quote_version_5_is_accepted(srv: SimServer) -> None:
    response, _, _ = srv.boot(quote_kw={"version": 5})
    assert response.status_code == 200, response.text


def test_sgx_like_quote_is_not_tdx(srv: SimServer) -> None:
    quote, nonce, key = honest_quote(srv)
    tee = layout.HEADER_TEE_TYPE
    sgx = quote[: tee.offset] + layout.TEE_TYPE_SGX.to_bytes(tee.size, "little") + quote[tee.end :]
    assert_refused(post_quote(srv.client, sgx, key, nonce.hex()), 403, "not_tdx")


# -- DCAP verification ----------------------------------------------------------------------


def test_bad_signature(srv: SimServer) -> None:
    quote, nonce, key = honest_quote(srv)
    forged = bytearray(quote)
    forged[layout.body_offset(4) + layout.TD_REPORT_FIELD["rtmr2"].offset] ^= 0x01
    response = post_quote(srv.client, bytes(forged), key, nonce.hex())
    assert_refused(response, 403, "quote_signature_invalid")


def test_untrusted_root(tmp_path: Path, database_url: str, sim: SimState) -> None:
    stranger = SimState.init(tmp_path / "stranger", seed=7)
    with sim_server(tmp_path, database_url, sim, trust_root=stranger.path / "root_ca.der") as srv:
        srv.register_image("golden")
        response, _, _ = srv.boot()
        assert_refused(response, 403, "cert_chain_untrusted")


def test_intel_root_refuses_simulated_platform(
    tmp_path: Path, database_url: str, sim: SimState
) -> None:
    with sim_server(tmp_path, database_url, sim, trust_root=None) as srv:
        srv.register_image("golden")
        response, _, _ = srv.boot()
        assert_refused(response, 403, "cert_chain_untrusted")


def test_revoked_pck(srv: SimServer) -> None:
    srv.sim.revoke_pck()
    reimport(srv)
    response, _, _ = srv.boot()
    assert_refused(response, 403, "pck_revoked")


NON_UPTODATE = [
    ("swhardening", None, "SWHardeningNeeded"),
    ("configneeded", None, "ConfigurationNeeded"),
    ("outofdate", None, "OutOfDate"),
    (
        "swhardening",
        tcb.TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED,
        "ConfigurationAndSWHardeningNeeded",
    ),
    ("outofdate", tcb.TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED, "OutOfDateConfigurationNeeded"),
    ("revoked", None, "Revoked"),
]


@pytest.mark.parametrize(
    ("preset", "status", "expected"), NON_UPTODATE, ids=[e[2] for e in NON_UPTODATE]
)
def test_disallowed_tcb_status(
    srv: SimServer, preset: str, status: tcb.TcbStatus | None, expected: str
) -> None:
    if status is not None:
        srv.sim.reissue_collateral(
            statuses={preset: status}, advisories={preset: ("INTEL-SA-99999",)}
        )
        reimport(srv)
    response, _, _ = srv.boot(quote_kw={"platform_tcb": preset})
    message = assert_refused(response, 403, "tcb_status_rejected")
    assert expected in message
    if status is not None:
        assert "INTEL-SA-99999" in message


def test_unknown_tcb_level(srv: SimServer) -> None:
    response, _, _ = srv.boot(quote_kw={"platform_tcb": "unknown"})
    assert_refused(response, 403, "tcb_status_rejected")


def test_allowed_status_list_admits_outofdate(
    tmp_path: Path, database_url: str, sim: SimState
) -> None:
    allowed = ("UpToDate", "OutOfDate")
    with sim_server(tmp_path, database_url, sim, allowed_tcb_statuses=allowed) as srv:
        srv.register_image("golden")
        response, _, _ = srv.boot(quote_kw={"platform_tcb": "outofdate"})
        assert response.status_code == 200, response.text
        response, _, _ = srv.boot(quote_kw={"platform_tcb": "swhardening"})
        assert_refused(response, 403, "tcb_status_rejected")


# -- policy -----------------------------------------------------------------------------------


def test_debug_td(srv: SimServer) -> None:
    response, _, _ = srv.boot(quote_kw={"debug": True})
    assert_refused(response, 403, "debug_td")


@pytest.mark.parametrize("register", ["mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"])
def test_measurement_mismatch(srv: SimServer, register: str) -> None:
    profile = Profile.default()
    changed = "ab" * 48
    profile = (
        profile.with_mrtd(changed)
        if register == "mrtd"
        else profile.with_rtmr(int(register[-1]), changed)
    )
    response, _, _ = srv.boot(profile)
    message = assert_refused(response, 403, "measurement_mismatch")
    assert message.startswith(f"{register} differs from every approved image")


def test_no_image_registered(tmp_path: Path, database_url: str, sim: SimState) -> None:
    with sim_server(tmp_path, database_url, sim) as srv:
        response, _, _ = srv.boot()
        assert_refused(response, 403, "no_image_registered")


def test_retired_image_is_not_approved(tmp_path: Path, database_url: str, sim: SimState) -> None:
    from tdx_boot_attest.server.db.engine import session_scope
    from tdx_boot_attest.server.images import retire_image

    with sim_server(tmp_path, database_url, sim) as srv:
        srv.register_image("golden")
        sessions = make_sessionmaker(make_engine(database_url, pool_size=1))
        with session_scope(sessions) as session:
            retire_image(session, "golden", dt.datetime.now(dt.UTC))
        response, _, _ = srv.boot()
        assert_refused(response, 403, "no_image_registered")


# -- collateral --------------------------------------------------------------------------------


def test_pccs_unreachable_with_empty_cache(
    tmp_path: Path, database_url: str, sim: SimState
) -> None:
    with sim_server(tmp_path, database_url, sim, import_sim_collateral=False) as srv:
        srv.register_image("golden")
        response, _, _ = srv.boot()
        assert_refused(response, 503, "collateral_unavailable")
        assert int(response.headers["Retry-After"]) >= 0


def test_expired_collateral_is_never_used(srv: SimServer) -> None:
    srv.clock.advance(days=400)
    response, _, _ = srv.boot()
    assert_refused(response, 503, "collateral_unavailable")


def test_low_order_public_key_is_a_422_not_a_500(srv: SimServer) -> None:
    from tdx_boot_attest.agent.protocol import report_data

    nonce = get_nonce(srv.client)
    zero_key = bytes(32)
    quote = srv.sim.make_quote(report_data(nonce, zero_key))
    response = srv.client.post(
        "/servers/boot/attestation",
        json={
            "quote": base64.b64encode(quote).decode(),
            "public_key": base64.b64encode(zero_key).decode(),
        },
        headers={"X-Chutes-Nonce": nonce.hex()},
    )
    assert_refused(response, 422, "public_key_invalid")


def test_quote_with_excess_base64_padding(srv: SimServer) -> None:
    quote, nonce, key = honest_quote(srv)
    text = base64.b64encode(quote).decode()
    padded = text + "="
    response = post_quote(srv.client, padded, key, nonce.hex())
    assert_refused(response, 422, "quote_malformed")


def test_chunked_body_over_the_limit_without_content_length(srv: SimServer) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"quote": "'
        for _ in range(32):
            yield b"A" * 65536
        yield b'", "public_key": ""}'

    response = srv.client.post(
        "/servers/boot/attestation",
        content=chunks(),
        headers={"content-type": "application/json", "X-Chutes-Nonce": "00" * 32},
    )
    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert_refused(response, 422, "quote_too_large")


def test_quoting_enclave_below_every_tcb_level(srv: SimServer) -> None:
    response, _, _ = srv.boot(quote_kw={"qe_isvsvn": 1})
    message = assert_refused(response, 403, "tcb_status_rejected")
    assert "QE ISVSVN" in message


def test_td_without_sept_ve_disable(srv: SimServer) -> None:
    attributes = int.from_bytes(bytes.fromhex(Profile.default().td_attributes), "little")
    cleared = (attributes & ~(1 << 28)).to_bytes(8, "little").hex()
    response, _, _ = srv.boot(Profile.default().replace(td_attributes=cleared))
    message = assert_refused(response, 403, "td_attributes_rejected")
    assert "SEPT_VE_DISABLE" in message
