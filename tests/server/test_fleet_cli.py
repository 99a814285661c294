"""``tdx-attest-server miner add|list|remove|token`` against both databases."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from tdx_boot_attest.server.auth.tokens import token_digest
from tdx_boot_attest.server.cli import main
from tdx_boot_attest.server.db.engine import make_engine, make_sessionmaker, session_scope
from tdx_boot_attest.server.db.fleet import MinerToken
from tdx_boot_attest.server.fleet.miners import DatabaseMiners
from tests.support.fleet_env import FleetEnv
from tests.support.miner_keys import MinerKey

KEY = MinerKey.from_seed(55)


@pytest.fixture
def cli_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TDX_ATTEST_DATABASE_URL", database_url)
    monkeypatch.delenv("TDX_ATTEST_CONFIG", raising=False)
    return database_url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_add_list_remove(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "miner", "add", KEY.hotkey)[:2] == (0, f"registered: miner {KEY.hotkey}\n")
    assert run(capsys, "miner", "add", KEY.hotkey)[1].startswith("already registered")
    code, out, _ = run(capsys, "miner", "list", "--json")
    assert code == 0
    (row,) = json.loads(out)
    assert (row["hotkey"], row["tokens"], row["servers"]) == (KEY.hotkey, 0, 0)
    assert run(capsys, "miner", "remove", KEY.hotkey)[0] == 0
    assert json.loads(run(capsys, "miner", "list", "--json")[1]) == []


def test_add_refuses_a_bad_hotkey(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "miner", "add", "not-an-address")
    assert code == 1
    assert "request_invalid" in err


def test_remove_unknown_miner(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "miner", "remove", KEY.hotkey)
    assert code == 1
    assert "not_found" in err


def test_token_is_printed_once_and_stored_hashed(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "miner", "add", KEY.hotkey)
    code, out, _ = run(capsys, "miner", "token", "new", KEY.hotkey)
    token = out.strip()
    assert code == 0
    assert token.startswith("tdxa_")
    engine = make_engine(cli_env, pool_size=1)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            (stored,) = session.scalars(select(MinerToken.token_sha256)).all()
            miners = DatabaseMiners(session)
            assert stored == token_digest(token)
            assert token not in stored
            assert miners.hotkey_for_token_digest(stored) == (KEY.hotkey, stored)
    finally:
        engine.dispose()
    assert "tokens=1" in run(capsys, "miner", "list")[1]
    assert run(capsys, "miner", "token", "revoke", KEY.hotkey)[1] == (
        f"revoked 1 token(s) of miner {KEY.hotkey}\n"
    )


def test_token_for_unknown_miner(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "miner", "token", "new", KEY.hotkey)
    assert (code, out) == (1, "")
    assert "not_found" in err


def test_cli_token_authenticates_and_revocation_ends_it(
    fleet: FleetEnv, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TDX_ATTEST_DATABASE_URL", fleet.ctx.settings.database_url)
    run(capsys, "miner", "add", KEY.hotkey)
    token = run(capsys, "miner", "token", "new", KEY.hotkey)[1].strip()
    assert fleet.with_token("GET", "/servers/", token).status_code == 200
    run(capsys, "miner", "token", "revoke", KEY.hotkey)
    assert fleet.with_token("GET", "/servers/", token).status_code == 401


def test_a_miner_with_servers_cannot_be_removed(
    fleet: FleetEnv, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TDX_ATTEST_DATABASE_URL", fleet.ctx.settings.database_url)
    run(capsys, "miner", "add", KEY.hotkey)
    fleet.boot()
    assert fleet.register(KEY, "node-1").status_code == 201
    code, _, err = run(capsys, "miner", "remove", KEY.hotkey)
    assert code == 1
    assert "conflict" in err
    assert fleet.signed("DELETE", "/servers/node-1", KEY).status_code == 200
    assert run(capsys, "miner", "remove", KEY.hotkey)[0] == 0
    assert fleet.signed("GET", "/servers/", KEY).status_code == 401
