"""The admin CLI: images, passphrase rotation, collateral import, migrations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from tdx_boot_attest.server.cli import main
from tdx_boot_attest.server.db.engine import make_engine, make_sessionmaker, session_scope
from tdx_boot_attest.server.db.models import CollateralCacheEntry, Image
from tdx_boot_attest.server.sealing import load_master_key
from tdx_boot_attest.tdxsim.state import SimState


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
    assert key.unseal(image.sealed_passphrase, "golden") == b"luks-pw-cli\n"

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


EVENT_LOGS = Path(__file__).resolve().parent.parent / "assets" / "eventlog"


def test_eventlog_show_replays_a_real_log_against_its_quote(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log, quote = EVENT_LOGS / "gce-cos113.ccel", EVENT_LOGS / "gce-cos113.quote"
    assert main(["eventlog", "show", "--event-log", str(log), "--quote", str(quote)]) == 0
    out = capsys.readouterr().out
    assert f"{log}: 43 events, 18101 bytes" in out
    for register in ("rtmr0", "rtmr1", "rtmr2"):
        assert any(
            line.startswith(register) and line.endswith("equals the quote")
            for line in out.splitlines()
        )
    assert any(line.startswith("rtmr3") and "not covered" in line for line in out.splitlines())
    assert main(["eventlog", "show", "--event-log", str(log), "--quote", str(quote), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["events"]) == 43
    assert [report["registers"][f"rtmr{n}"]["matches_quote"] for n in range(4)] == [
        True,
        True,
        True,
        None,
    ]


def test_eventlog_show_refuses_a_log_of_another_boot_and_a_broken_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other, quote = EVENT_LOGS / "qemu-direct-boot.ccel", EVENT_LOGS / "gce-cos113.quote"
    assert main(["eventlog", "show", "--event-log", str(other), "--quote", str(quote)]) == 1
    captured = capsys.readouterr()
    assert "DIFFERS: quote has" in captured.out
    assert "does not replay to the quote: rtmr0, rtmr1, rtmr2 differ" in captured.err
    broken = tmp_path / "broken.ccel"
    broken.write_bytes(other.read_bytes()[:100])
    assert main(["eventlog", "show", "--event-log", str(broken)]) == 1
    assert "event log invalid at byte" in capsys.readouterr().err


def test_image_add_with_a_golden_event_log_and_show(
    tmp_path: Path, database_url: str, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "pw"
    secret.write_bytes(b"luks-pw-cli-events")
    quote = EVENT_LOGS / "gce-cos113.quote"
    assert main(["migrate"]) == 0
    add = ["image", "add", "cos", "--from-quote", str(quote), "--passphrase-file", str(secret)]
    # A log that is not the quote's boot is refused, and nothing is registered.
    assert main([*add, "--event-log", str(EVENT_LOGS / "qemu-direct-boot.ccel")]) == 1
    assert "event_log_mismatch: the event log is not the quote's boot" in capsys.readouterr().err
    assert main([*add, "--event-log", str(EVENT_LOGS / "gce-cos113.ccel")]) == 0
    capsys.readouterr()
    assert main(["image", "show", "cos"]) == 0
    out = capsys.readouterr().out
    assert "reference events (event log gce-cos113.ccel of quote gce-cos113.quote):" in out
    assert "boot application \\EFI\\BOOT\\BOOTX64.EFI" in out
    assert main(["image", "show", "cos", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert len(shown["reference_events"]) == 43
    assert shown["reference_events"][0]["name"] == "TD HOB"
    assert shown["reference_events"][0]["component"] == "TD memory (TD HOB)"
    image = _image(database_url, "cos")
    assert image.reference_events is not None
    assert main(["image", "show", "absent"]) == 1
    assert "not_found" in capsys.readouterr().err


def test_an_event_log_needs_its_quote(
    tmp_path: Path, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "pw"
    secret.write_bytes(b"luks-pw-cli-events")
    args = ["image", "add", "x", "--mrtd", "00" * 48, "--rtmr0", "00" * 48, "--rtmr1", "00" * 48]
    args += ["--rtmr2", "00" * 48, "--rtmr3", "00" * 48, "--passphrase-file", str(secret)]
    assert main(["migrate"]) == 0
    assert main([*args, "--event-log", str(EVENT_LOGS / "gce-cos113.ccel")]) == 1
    assert "--event-log needs --from-quote" in capsys.readouterr().err


def test_the_parser_has_version(capsys: pytest.CaptureFixture[str]) -> None:
    from tdx_boot_attest.agent import package_info
    from tdx_boot_attest.server.cli import build_parser

    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--version"])
    assert exited.value.code == 0
    assert f" {package_info.version()} (Python " in capsys.readouterr().out
