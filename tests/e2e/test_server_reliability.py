"""The real server process under hostile input: every answer is a clear 4xx with its reason."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from tdx_boot_attest.server.db.engine import make_engine, make_sessionmaker, session_scope
from tdx_boot_attest.server.db.models import BootAttestation
from tdx_boot_attest.tdxsim.profile import Profile
from tdx_boot_attest.tdxsim.state import SimState
from tests.support.boot_client import AgentKey, expected_report_data, get_nonce, post_quote
from tests.support.databases import DB_KINDS, create_postgres_database, drop_postgres_database
from tests.support.live_server import LiveServer, live_server

pytestmark = pytest.mark.slow
PASSPHRASE = b"luks-pw-reliability-5d1e0c"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimState:
    return SimState.init(tmp_path_factory.mktemp("sim") / "state", seed=5)


@pytest.fixture(scope="module", params=DB_KINDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sim: SimState
) -> Iterator[LiveServer]:
    """One live server per database kind for the whole module."""
    workdir = tmp_path_factory.mktemp(f"srv-{request.param}")
    if request.param == "sqlite":
        url, drop = f"sqlite:///{workdir / 'verifier.db'}", None
    else:
        url = create_postgres_database()
        drop = url
    golden = workdir / "golden.quote"
    golden.write_bytes(sim.make_quote(bytes(64)))
    try:
        with live_server(
            workdir,
            url,
            trust_root=sim.path / "root_ca.der",
            collateral_file=sim.path / "collateral.json",
        ) as live:
            live.add_image("golden", passphrase=PASSPHRASE, quote_file=golden)
            yield live
    finally:
        if drop is not None:
            drop_postgres_database(drop)


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        yield http


def _refusal(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["detail"] == f"{body['reason']}: {body['message']}"
    return str(body["reason"])


def test_quote_with_excess_base64_padding_is_malformed(client: httpx.Client, sim: SimState) -> None:
    key = AgentKey.generate()
    nonce = get_nonce(client)
    text = base64.b64encode(sim.make_quote(expected_report_data(nonce, key))).decode()
    response = post_quote(client, text + "=", key, nonce.hex())
    assert _refusal(response, 422) == "quote_malformed"
    # The attempt did not spend the nonce: the honest retry with it succeeds.
    retry = post_quote(client, text, key, nonce.hex())
    assert retry.status_code == 200, retry.text
    assert key.open(retry.json()["sealed_key"], nonce) == PASSPHRASE


def test_chunked_body_over_the_limit_is_quote_too_large(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"quote": "'
        for _ in range(32):
            yield b"A" * 65536
        yield b'", "public_key": ""}'

    response = client.post(
        "/servers/boot/attestation",
        content=chunks(),
        headers={"content-type": "application/json", "X-Chutes-Nonce": "00" * 32},
    )
    assert "content-length" not in {name.lower() for name in response.request.headers}
    assert _refusal(response, 422) == "quote_too_large"


def _boot(client: httpx.Client, sim: SimState, profile: Profile | None, **kw: object) -> str:
    key = AgentKey.generate()
    nonce = get_nonce(client)
    quote = sim.make_quote(expected_report_data(nonce, key), profile, **kw)  # type: ignore[arg-type]
    return _refusal(post_quote(client, quote, key, nonce.hex()), 403)


def test_quoting_enclave_below_every_level_is_a_tcb_refusal(
    client: httpx.Client, sim: SimState
) -> None:
    assert _boot(client, sim, None, qe_isvsvn=1) == "tcb_status_rejected"


def test_td_without_sept_ve_disable_is_an_attributes_refusal(
    client: httpx.Client, sim: SimState
) -> None:
    attributes = int.from_bytes(bytes.fromhex(Profile.default().td_attributes), "little")
    cleared = (attributes & ~(1 << 28)).to_bytes(8, "little").hex()
    profile = Profile.default().replace(td_attributes=cleared)
    assert _boot(client, sim, profile) == "td_attributes_rejected"


def _audit_rows(server: LiveServer) -> list[tuple[str | None, str | None, str | None]]:
    engine = make_engine(server.env["TDX_ATTEST_DATABASE_URL"], pool_size=1)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            rows = session.execute(
                select(
                    BootAttestation.reason, BootAttestation.message, BootAttestation.bookkeeping
                ).order_by(BootAttestation.created_at)
            )
            return [(row.reason, row.message, row.bookkeeping) for row in rows]
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "field",
    [{"vm_name": "vm-\ud800"}, {"vm_name": "vm\x00"}, {"note": "a\x00b"}, {"blob": "x" * 240_000}],
    ids=["lone_surrogate", "nul_vm_name", "nul_other", "oversized"],
)
def test_unstorable_or_oversized_bookkeeping_is_refused_with_a_row(
    server: LiveServer, client: httpx.Client, field: dict[str, str]
) -> None:
    marker = secrets.token_hex(8)
    body = {"quote": "AAAA", "public_key": AgentKey.generate().public_b64, "marker": marker}
    response = client.post(
        "/servers/boot/attestation",
        content=json.dumps({**body, **field}),
        headers={"content-type": "application/json"},
    )
    assert _refusal(response, 422) == "request_invalid"
    assert repr(next(iter(field))) in response.json()["message"]
    rows = [row for row in _audit_rows(server) if row[1] == response.json()["message"]]
    assert rows, "the refused attempt left no audit row"
    assert all(bookkeeping is None for _, _, bookkeeping in rows)
