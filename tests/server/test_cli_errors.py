"""The admin CLI's errors: the driver's own database message, ports, unreadable files."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tdx_boot_attest.server.cli import describe_database_error, main
from tests.support.databases import PG_ADMIN_URL


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TDX_ATTEST_") and name != "TDX_ATTEST_TEST_PG_URL":
            monkeypatch.delenv(name)


def _run(
    args: list[str],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, str]:
    monkeypatch.setenv("TDX_ATTEST_DATABASE_URL", database_url)
    status = main(args)
    return status, capsys.readouterr().err


def _postgres_url(**parts: object) -> str:
    url = sa.make_url(PG_ADMIN_URL).set(drivername="postgresql", **parts)  # type: ignore[arg-type]
    return url.render_as_string(hide_password=False)


def _postgres_reachable() -> bool:
    url = sa.make_url(PG_ADMIN_URL)
    try:
        socket.create_connection((url.host or "127.0.0.1", url.port or 5432), timeout=2).close()
    except OSError:
        return False
    return True


def test_sqlite_file_in_a_missing_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/absent/server.db"
    for command in (["migrate"], ["image", "list"]):
        status, err = _run(command, url, monkeypatch, capsys)
        assert status == 1
        assert "database error: unable to open database file" in err
        assert "check that the database file's directory exists" in err
        assert "migrate" not in err


def test_malformed_sqlite_url_gives_the_forms(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = _run(["migrate"], "sqlite://server.db", monkeypatch, capsys)
    assert status == 1
    assert "config_invalid" in err
    assert "'sqlite://server.db'" in err
    assert "sqlite:////abs/path.db" in err
    assert "sqlite:///relative/path.db" in err


def test_missing_table_suggests_migrate_but_not_to_migrate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/fresh.db"
    status, err = _run(["image", "list"], url, monkeypatch, capsys)
    assert status == 1
    assert "database error: no such table: images" in err
    assert "(run 'tdx-attest-server migrate' first)" in err


def test_migrate_is_never_told_to_run_migrate(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/empty.db")
    try:
        with engine.connect() as conn, pytest.raises(sa.exc.OperationalError) as caught:
            conn.exec_driver_sql("SELECT * FROM images")
    finally:
        engine.dispose()
    assert describe_database_error(caught.value, "migrate") == (
        "database error: no such table: images"
    )
    assert "run 'tdx-attest-server migrate' first" in describe_database_error(caught.value, "image")


@pytest.mark.postgres
def test_postgres_database_that_does_not_exist(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if not _postgres_reachable():
        pytest.skip(f"no PostgreSQL at {sa.make_url(PG_ADMIN_URL).render_as_string()}")
    url = _postgres_url(database="tdxattest_absent_db")
    for command in (["migrate"], ["image", "list"]):
        status, err = _run(command, url, monkeypatch, capsys)
        assert status == 1
        assert 'database "tdxattest_absent_db" does not exist' in err
        assert "create the database" in err
        assert "tdx-attest-server migrate" not in err


@pytest.mark.postgres
def test_postgres_wrong_port(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    url = _postgres_url(host="127.0.0.1", port=free_port)
    monkeypatch.setenv("TDX_ATTEST_DATABASE_CONNECT_TIMEOUT_SECONDS", "2")
    status, err = _run(["migrate"], url, monkeypatch, capsys)
    assert status == 1
    assert f"port {free_port} failed: Connection refused" in err
    assert "check the host and port in database_url" in err
    assert "tdx-attest-server migrate" not in err


@pytest.mark.parametrize("port", ["99999", "0", "-1", "eighty"])
def test_serve_refuses_a_port_out_of_range_before_announcing(
    port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--port", port])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert "is not a port number (1 to 65535)" in captured.err
    assert captured.out == ""


def test_serve_on_a_port_in_use_exits_1_naming_the_address(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TDX_ATTEST_")}
        env.update(
            TDX_ATTEST_DEV_MODE="1", TDX_ATTEST_DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite"
        )
        result = subprocess.run(
            [sys.executable, "-m", "tdx_boot_attest.server.cli", "serve", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "choose another --port" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Uvicorn running" not in result.stderr


def test_collateral_import_of_a_binary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = tmp_path / "collateral.bin"
    binary.write_bytes(bytes(range(256)))
    url = f"sqlite:///{tmp_path}/db.sqlite"
    status, err = _run(["collateral", "import", str(binary)], url, monkeypatch, capsys)
    assert status == 1
    assert f"{binary} is not a text file; expected dcap-qvl collateral JSON" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("where", ["before", "after"])
def test_config_before_or_after_the_command(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f'database_url = "sqlite:///{tmp_path}/from-config.db"\n')
    args = (
        ["--config", str(config), "migrate"]
        if where == "before"
        else ["migrate", "--config", str(config)]
    )
    assert main(args) == 0
    assert (tmp_path / "from-config.db").exists()
    listing = ["image", "list", "--config", str(config)]
    assert main(listing) == 0
