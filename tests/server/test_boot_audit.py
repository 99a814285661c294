"""Every boot attempt the attestation logic sees leaves its audit row, whatever it carried."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tdx_boot_attest.agent.protocol import MAX_QUOTE_BYTES
from tdx_boot_attest.server.db.engine import make_engine, make_sessionmaker, session_scope
from tdx_boot_attest.server.db.models import BootAttestation
from tdx_boot_attest.tdxsim.profile import Profile
from tdx_boot_attest.tdxsim.state import SimState
from tests.support.boot_client import AgentKey, get_nonce, post_quote
from tests.support.sim_server import SimServer, sim_server

SEPT_VE_DISABLE = 1 << 28


@pytest.fixture
def srv(tmp_path: Path, database_url: str, sim: SimState) -> Iterator[SimServer]:
    with sim_server(tmp_path, database_url, sim) as server:
        server.register_image("golden")
        yield server


def rows_for(database_url: str, vm_name: str | None = None) -> list[BootAttestation]:
    engine = make_engine(database_url, pool_size=1)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            query = select(BootAttestation).order_by(BootAttestation.created_at)
            if vm_name is not None:
                query = query.where(BootAttestation.vm_name == vm_name)
            return list(session.scalars(query))
    finally:
        engine.dispose()


def _post(
    srv: SimServer,
    vm: str,
    *,
    nonce: bytes | None = None,
    header: str | None = "",
    key: AgentKey | None = None,
    quote: bytes | str | None = None,
    profile: Profile | None = None,
    **extra: object,
) -> httpx.Response:
    """A boot attempt with one thing changed; ``vm`` marks its row."""
    key = key or AgentKey.generate()
    nonce = nonce if nonce is not None else get_nonce(srv.client)
    if quote is None:
        quote = srv.quote_for(nonce, key, profile)
    nonce_header = nonce.hex() if header == "" else header
    return post_quote(srv.client, quote, key, nonce_header, vm_name=vm, **extra)


def _sept_cleared() -> Profile:
    value = int.from_bytes(bytes.fromhex(Profile.default().td_attributes), "little")
    return Profile.default().replace(
        td_attributes=(value & ~SEPT_VE_DISABLE).to_bytes(8, "little").hex()
    )


def _used_nonce(srv: SimServer, vm: str) -> httpx.Response:
    key = AgentKey.generate()
    nonce = get_nonce(srv.client)
    quote = srv.quote_for(nonce, key)
    assert post_quote(srv.client, quote, key, nonce.hex()).status_code == 200
    return _post(srv, vm, nonce=nonce, key=key, quote=quote)


def _expired_nonce(srv: SimServer, vm: str) -> httpx.Response:
    key = AgentKey.generate()
    nonce = get_nonce(srv.client)
    quote = srv.quote_for(nonce, key)
    srv.clock.advance(seconds=srv.settings.nonce_ttl_seconds + 1)
    return _post(srv, vm, nonce=nonce, key=key, quote=quote)


def _other_nonce_in_header(srv: SimServer, vm: str) -> httpx.Response:
    key = AgentKey.generate()
    quote = srv.quote_for(get_nonce(srv.client), key)
    return _post(srv, vm, key=key, quote=quote)


def _other_public_key(srv: SimServer, vm: str) -> httpx.Response:
    nonce = get_nonce(srv.client)
    quote = srv.quote_for(nonce, AgentKey.generate())
    return _post(srv, vm, nonce=nonce, quote=quote)


def _flipped_signature(srv: SimServer, vm: str) -> httpx.Response:
    key = AgentKey.generate()
    nonce = get_nonce(srv.client)
    forged = bytearray(srv.quote_for(nonce, key))
    forged[472] ^= 0x01
    return _post(srv, vm, nonce=nonce, key=key, quote=bytes(forged))


def _revoked_pck(srv: SimServer, vm: str) -> httpx.Response:
    srv.sim.revoke_pck()
    engine = make_engine(srv.settings.database_url, pool_size=1)
    from tdx_boot_attest.server.collateral_cache import import_collateral

    import_collateral(make_sessionmaker(engine), srv.sim.collateral_json, srv.clock())
    engine.dispose()
    return _post(srv, vm)


def _collateral_expired(srv: SimServer, vm: str) -> httpx.Response:
    srv.clock.advance(days=400)
    return _post(srv, vm)


def _with_version(version: int) -> Callable[[SimServer, str], httpx.Response]:
    def attempt(srv: SimServer, vm: str) -> httpx.Response:
        key = AgentKey.generate()
        nonce = get_nonce(srv.client)
        quote = srv.quote_for(nonce, key)
        return _post(srv, vm, nonce=nonce, key=key, quote=version.to_bytes(2, "little") + quote[2:])

    return attempt


def _sgx_tee(srv: SimServer, vm: str) -> httpx.Response:
    key = AgentKey.generate()
    nonce = get_nonce(srv.client)
    quote = srv.quote_for(nonce, key)
    return _post(srv, vm, nonce=nonce, key=key, quote=quote[:4] + bytes(4) + quote[8:])


def _public_key_short(srv: SimServer, vm: str) -> httpx.Response:
    nonce = get_nonce(srv.client)
    body = {
        "quote": base64.b64encode(srv.quote_for(nonce, AgentKey.generate())).decode(),
        "public_key": base64.b64encode(b"k" * 31).decode(),
        "vm_name": vm,
    }
    return srv.client.post(
        "/servers/boot/attestation", json=body, headers={"X-Chutes-Nonce": nonce.hex()}
    )


def _post_with_quote_kw(srv: SimServer, vm: str, **quote_kw: Any) -> httpx.Response:
    key = AgentKey.generate()
    nonce = get_nonce(srv.client)
    quote = srv.quote_for(nonce, key, **quote_kw)
    return _post(srv, vm, nonce=nonce, key=key, quote=quote)


# reason -> how to make an attempt refused for it (each marks its row with vm_name).
REFUSALS: dict[str, Callable[[SimServer, str], httpx.Response]] = {
    "nonce_missing": lambda srv, vm: _post(srv, vm, header=None),
    "nonce_unknown": lambda srv, vm: _post(srv, vm, nonce=secrets.token_bytes(32)),
    "nonce_expired": _expired_nonce,
    "nonce_used": _used_nonce,
    "nonce_mismatch": _other_nonce_in_header,
    "report_data_mismatch": _other_public_key,
    "public_key_invalid": _public_key_short,
    "kem_unsupported": lambda srv, vm: _post(srv, vm, kem="rsa"),
    "quote_malformed": lambda srv, vm: _post(srv, vm, quote="@@@"),
    "quote_too_large": lambda srv, vm: _post(srv, vm, quote=bytes(MAX_QUOTE_BYTES + 3)),
    "not_tdx": _sgx_tee,
    "quote_version_unsupported": _with_version(3),
    "quote_signature_invalid": _flipped_signature,
    "pck_revoked": _revoked_pck,
    "tcb_status_rejected": lambda srv, vm: _post_with_quote_kw(srv, vm, platform_tcb="unknown"),
    "debug_td": lambda srv, vm: _post_with_quote_kw(srv, vm, debug=True),
    "td_attributes_rejected": lambda srv, vm: _post(srv, vm, profile=_sept_cleared()),
    "measurement_mismatch": lambda srv, vm: _post(
        srv, vm, profile=Profile.default().with_rtmr(2, "ee" * 48)
    ),
    "collateral_unavailable": _collateral_expired,
    "request_invalid": lambda srv, vm: _post(srv, vm, extra_field="x\x00y"),
}


@pytest.mark.parametrize("reason", list(REFUSALS))
def test_every_refusal_writes_its_row(srv: SimServer, database_url: str, reason: str) -> None:
    vm = f"audit-{reason}"
    response = REFUSALS[reason](srv, vm)
    assert response.status_code in {401, 403, 422, 503}, response.text
    assert response.json()["reason"] == reason, response.text
    if reason == "request_invalid":
        # The offending bookkeeping is not stored; the row is found by its message.
        rows = [row for row in rows_for(database_url) if row.reason == reason]
    else:
        rows = rows_for(database_url, vm)
    assert [(row.verdict, row.reason) for row in rows] == [("refused", reason)]
    assert rows[0].message == response.json()["message"]


def test_no_image_registered_writes_its_row(
    tmp_path: Path, database_url: str, sim: SimState
) -> None:
    with sim_server(tmp_path, database_url, sim) as srv:
        response = _post(srv, "audit-no-image")
        assert response.json()["reason"] == "no_image_registered"
    rows = rows_for(database_url, "audit-no-image")
    assert [row.reason for row in rows] == ["no_image_registered"]


BAD_TEXT = {
    "lone_surrogate": "vm-\ud800",
    "nul": "vm-\x00-name",
}


@pytest.mark.parametrize("field", ["vm_name", "other"])
@pytest.mark.parametrize("kind", list(BAD_TEXT))
def test_unstorable_bookkeeping_text_is_refused_and_recorded(
    srv: SimServer, database_url: str, field: str, kind: str
) -> None:
    """No nonce is needed: the refusal must still leave its trace."""
    body = {"quote": "AAAA", "public_key": AgentKey.generate().public_b64, field: BAD_TEXT[kind]}
    # JSON escapes (\ud800, \u0000) are how such text arrives over the wire.
    response = srv.client.post(
        "/servers/boot/attestation",
        content=json.dumps(body),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["reason"] == "request_invalid"
    assert repr(field) in response.json()["message"]
    (row,) = rows_for(database_url)
    assert (row.verdict, row.reason, row.vm_name, row.bookkeeping) == (
        "refused",
        "request_invalid",
        None,
        None,
    )


def test_an_accepted_boot_keeps_its_bookkeeping(srv: SimServer, database_url: str) -> None:
    response = _post(srv, "vm-\u00e9t\u00e9", rack="r1", slots=[1, 2])
    assert response.status_code == 200, response.text
    (row,) = rows_for(database_url)
    assert row.vm_name == "vm-\u00e9t\u00e9"
    assert row.bookkeeping == '{"rack": "r1", "slots": [1, 2], "vm_name": "vm-\u00e9t\u00e9"}'


@pytest.mark.parametrize(
    "extra",
    [
        {"blob": "x" * 240_000},
        {f"field{i}": i for i in range(17)},
        {"vm_name": "v" * 256},
    ],
    ids=["too_many_bytes", "too_many_fields", "vm_name_too_long"],
)
def test_bookkeeping_over_the_caps_is_refused_and_not_stored(
    srv: SimServer, database_url: str, extra: dict[str, object]
) -> None:
    body = {"quote": "AAAA", "public_key": AgentKey.generate().public_b64, **extra}
    response = srv.client.post("/servers/boot/attestation", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["reason"] == "request_invalid"
    (row,) = rows_for(database_url)
    assert (row.reason, row.bookkeeping, row.vm_name) == ("request_invalid", None, None)
    assert len(row.message or "") < 1000
