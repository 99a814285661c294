"""The admin CLI: images, passphrase rotation, collateral import, migrations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from server.cli import main
from server.db.engine import make_engine, make_sessionmaker, session_scope
from server.db.models import CollateralCacheEntry, Image
from server.sealing import load_master_key
from tdxsim.state import SimState


@pytest.fixture
def cli_env(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    key_file = tmp_path / "master.key"
    assert main(["master-key", "generate", str(key_file)]) == 0
    monkeypatch.setenv("TDX_ATTEST_DATABASE_URL", database_url)
    monkeypatch.setenv("TDX_ATTEST_MASTER_KEY_FILE", str(key_file))
    return key_file


def _image(database_url: str, name: str) -> Image:
    engine = make_engine(database_url, pool_size=1)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            image = session.scalars(select(Image).where(Image.name == name)).one()
            session.expunge(image)
            return image
    finally:
        engine.dispose()


def test_image_add_from_quote_list_retire(
    tmp_path: Path,
    database_url: str,
    cli_env: Path,
    sim: SimState,
    capsys: pytest.CaptureFixture[str],
) -> None:
    quote = tmp_path / "golden.quote"
    quote.write_bytes(sim.make_quote(bytes(64)))
    secret = tmp_path / "pw"
    secret.write_bytes(b"luks-pw-cli\n")
    assert main(["migrate"]) == 0
    assert (
        main(
            [
                "image",
                "add",
                "golden",
                "--from-quote",
                str(quote),
                "--passphrase-file",
                str(secret),
                "--runtime-rtmr3",
                "any",
            ]
        )
        == 0
    )
    image = _image(database_url, "golden")
    assert image.runtime_rtmr3 == "any"
    assert image.boot_rtmr3 == sim.make_quote(bytes(64))[520:568].hex()
    key = load_master_key(cli_env, dev_mode=False)
    assert key.unseal(image.sealed_passphrase, "golden") == b"luks-pw-cli"

    capsys.readouterr()
    assert main(["image", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in listed] == ["golden"]
    assert main(["image", "retire", "golden"]) == 0
    assert main(["image", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1]) == []
    assert main(["image", "retire", "golden"]) == 1
    assert "conflict" in capsys.readouterr().err
    assert "luks-pw-cli" not in capsys.readouterr().out


def test_image_add_explicit_values_and_rotation(
    tmp_path: Path, database_url: str, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "pw"
    secret.write_bytes(b"luks-pw-one")
    values = [
        "--mrtd",
        "11" * 48,
        "--rtmr0",
        "22" * 48,
        "--rtmr1",
        "33" * 48,
        "--rtmr2",
        "44" * 48,
        "--rtmr3",
        "00" * 48,
    ]
    assert (
        main(
            [
                "image",
                "add",
                "explicit",
                *values,
                "--passphrase-file",
                str(secret),
                "--mrconfigid",
                "55" * 48,
            ]
        )
        == 0
    )
    image = _image(database_url, "explicit")
    assert (image.mrtd, image.boot_rtmr1, image.runtime_rtmr1) == ("11" * 48, "33" * 48, "33" * 48)
    assert image.mrconfigid == "55" * 48 and image.mrowner is None
    secret.write_bytes(b"luks-pw-two")
    assert main(["image", "rotate-passphrase", "explicit", "--passphrase-file", str(secret)]) == 0
    rotated = _image(database_url, "explicit")
    assert (
        load_master_key(cli_env, dev_mode=False).unseal(rotated.sealed_passphrase, "explicit")
        == b"luks-pw-two"
    )
    assert rotated.passphrase_rotated_at is not None
    out = capsys.readouterr()
    assert "luks-pw" not in out.out + out.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["image", "add", "x", "--mrtd", "11" * 48], "--rtmr0"),
        (
            [
                "image",
                "add",
                "x",
                "--mrtd",
                "zz",
                "--rtmr0",
                "1",
                "--rtmr1",
                "1",
                "--rtmr2",
                "1",
                "--rtmr3",
                "1",
            ],
            "must be 48 bytes",
        ),
        (
            [
                "image",
                "add",
                "bad name!",
                "--mrtd",
                "11" * 48,
                "--rtmr0",
                "11" * 48,
                "--rtmr1",
                "11" * 48,
                "--rtmr2",
                "11" * 48,
                "--rtmr3",
                "11" * 48,
            ],
            "not allowed",
        ),
        (["image", "rotate-passphrase", "nobody"], "not_found"),
    ],
)
def test_cli_refusals(
    tmp_path: Path, cli_env: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    secret = tmp_path / "pw"
    secret.write_bytes(b"luks-pw-x")
    assert main([*args, "--passphrase-file", str(secret)]) == 1
    assert message in capsys.readouterr().err


def test_duplicate_image_is_a_conflict(
    tmp_path: Path, cli_env: Path, sim: SimState, capsys: pytest.CaptureFixture[str]
) -> None:
    quote = tmp_path / "q"
    quote.write_text(sim.make_quote(bytes(64)).hex())
    secret = tmp_path / "pw"
    secret.write_bytes(b"luks-pw-dup")
    args = ["image", "add", "dup", "--from-quote", str(quote), "--passphrase-file", str(secret)]
    assert main(args) == 0
    assert main(args) == 1
    assert "conflict:" in capsys.readouterr().err


def test_collateral_import(
    database_url: str, cli_env: Path, sim: SimState, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["collateral", "import", str(sim.path / "collateral.json")]) == 0
    assert "valid now" in capsys.readouterr().out
    engine = make_engine(database_url, pool_size=1)
    with session_scope(make_sessionmaker(engine)) as session:
        row = session.scalars(select(CollateralCacheEntry)).one()
        assert (row.fmspc, row.ca, row.source) == (sim.fmspc.hex(), "platform", "imported")
    engine.dispose()
    assert main(["collateral", "list"]) == 0
    assert sim.fmspc.hex() in capsys.readouterr().out


def test_collateral_import_refuses_garbage(
    tmp_path: Path, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["collateral", "import", str(bad)]) == 1
    assert "collateral_unavailable" in capsys.readouterr().err


@pytest.mark.postgres
def test_serve_refuses_an_unmigrated_postgres_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.databases import create_postgres_database, drop_postgres_database

    url = create_postgres_database()
    try:
        monkeypatch.setenv("TDX_ATTEST_DATABASE_URL", url)
        monkeypatch.setenv("TDX_ATTEST_DEV_MODE", "1")
        assert main(["serve", "--port", "9"]) == 1
        assert "tdx-attest-server migrate" in capsys.readouterr().err
    finally:
        drop_postgres_database(url)
