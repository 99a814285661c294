"""Configuration mistakes: each is refused as config_invalid, naming the cause and the fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tdx_boot_attest.agent.protocol import Reason
from tdx_boot_attest.server.cli import main
from tdx_boot_attest.server.errors import ConfigurationError
from tdx_boot_attest.server.sealing import generate_master_key_file, load_master_key
from tdx_boot_attest.server.settings import Settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TDX_ATTEST_") and name != "TDX_ATTEST_TEST_PG_URL":
            monkeypatch.delenv(name)


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = main(args)
    return status, capsys.readouterr().err


def test_configuration_errors_have_their_own_reason() -> None:
    assert ConfigurationError("x").reason is Reason.CONFIG_INVALID
    assert Reason.CONFIG_INVALID.value == "config_invalid"


def test_group_readable_key_says_chmod_600_with_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "master.key"
    generate_master_key_file(key)
    key.chmod(0o644)
    monkeypatch.setenv("TDX_ATTEST_MASTER_KEY_FILE", str(key))
    monkeypatch.setenv("TDX_ATTEST_DATABASE_URL", f"sqlite:///{tmp_path}/db.sqlite")
    secret = tmp_path / "pw"
    secret.write_bytes(b"passphrase")
    status, err = _run(
        ["image", "add", "x", "--mrtd", "00", "--passphrase-file", str(secret)], capsys
    )
    assert status == 1
    assert f"config_invalid: master key file {key} is readable by group or others" in err
    assert "(mode 644)" in err
    assert f"run 'chmod 600 {key}'" in err


def test_missing_key_file_says_how_to_create_it(tmp_path: Path) -> None:
    missing = tmp_path / "absent.key"
    with pytest.raises(ConfigurationError) as caught:
        load_master_key(missing, dev_mode=False)
    assert caught.value.reason is Reason.CONFIG_INVALID
    assert "No such file or directory" in caught.value.message
    assert f"tdx-attest-server master-key generate {missing}" in caught.value.message


def test_existing_key_file_is_kept_and_rotation_is_explained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "master.key"
    assert main(["master-key", "generate", str(key)]) == 0
    before = key.read_bytes()
    status, err = _run(["master-key", "generate", str(key)], capsys)
    assert status == 1
    assert key.read_bytes() == before
    assert f"config_invalid: {key} exists; refusing to overwrite a master key" in err
    assert "rotate-passphrase" in err
    assert "generate the new key at another path" in err


def test_generate_creates_a_missing_directory_private(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "etc" / "tdx-attest" / "master.key"
    assert main(["master-key", "generate", str(key)]) == 0
    out = capsys.readouterr().out
    assert f"created the directory {key.parent} (mode 0700)" in out
    assert (key.parent.stat().st_mode & 0o777) == 0o700
    assert (key.parent.parent.stat().st_mode & 0o777) == 0o700
    assert (key.stat().st_mode & 0o777) == 0o600
    assert len(load_master_key(key, dev_mode=False).derive_key(b"p", b"s")) == 32


def test_generate_names_a_directory_it_cannot_create(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    status, err = _run(["master-key", "generate", str(blocker / "sub" / "master.key")], capsys)
    assert status == 1
    assert f"config_invalid: cannot create the directory {blocker / 'sub'}" in err
    assert "create it (mode 0700) or choose another path" in err


def test_unknown_toml_key_is_named_with_the_closest_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "server.toml"
    config.write_text("[server]\nnonce_ttl = 5\n")
    status, err = _run(["--config", str(config), "migrate"], capsys)
    assert status == 1
    assert f"config_invalid: config file {config}: unknown key 'nonce_ttl'" in err
    assert "(did you mean nonce_ttl_seconds?)" in err


def test_misspelt_environment_variable_stops_with_the_closest_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TDX_ATTEST_NONCE_TTL", "5")
    status, err = _run(["migrate"], capsys)
    assert status == 1
    assert "config_invalid: unknown environment variable TDX_ATTEST_NONCE_TTL" in err
    assert "(did you mean TDX_ATTEST_NONCE_TTL_SECONDS?)" in err


@pytest.mark.parametrize("name", ["TDX_ATTEST_CONFIG", "TDX_ATTEST_SERVER_ID"])
def test_variables_that_are_not_settings_are_allowed(tmp_path: Path, name: str) -> None:
    value = str(tmp_path / "empty.toml")
    Path(value).write_text("")
    assert Settings.load(environ={name: value, "TDX_ATTEST_TEST_PG_URL": "x"}).dev_mode is False


@pytest.mark.parametrize(
    ("setting", "value", "fragment"),
    [
        ("pccs_url", "ftp://pccs.example", "expected the form https://host[:port][/path]"),
        ("pccs_url", "pccs.example:8081", "'pccs.example:8081'"),
        ("database_url", "mysql://db/x", "expected sqlite:////abs/path.db"),
        ("database_url", "sqlite://server.db", "(sqlite:///relative/path.db)"),
        ("database_url", "sqlite://server.db", "(sqlite:////abs/path.db)"),
    ],
)
def test_invalid_urls_show_the_value_and_the_expected_form(
    setting: str, value: str, fragment: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.load(environ={f"TDX_ATTEST_{setting.upper()}": value})
    assert caught.value.reason is Reason.CONFIG_INVALID
    assert f"setting {setting!r} has an invalid value: got" in caught.value.message
    assert fragment in caught.value.message


def test_a_database_url_password_is_not_repeated() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.load(environ={"TDX_ATTEST_DATABASE_URL": "mysql://u:hunter2@db/x"})
    assert "hunter2" not in caught.value.message
    assert "mysql://u:***@db/x" in caught.value.message


def test_every_setting_has_an_explicit_parser() -> None:
    import dataclasses

    for field in dataclasses.fields(Settings):
        assert callable(field.metadata["parse"]), field.name
    # The parsers keep the values' types, for the file and the variables alike.
    settings = Settings.load(
        environ={
            "TDX_ATTEST_NONCE_TTL_SECONDS": "45",
            "TDX_ATTEST_DEV_MODE": "yes",
            "TDX_ATTEST_COLLATERAL_FETCH_TIMEOUT_SECONDS": "2.5",
            "TDX_ATTEST_ALLOWED_TCB_STATUSES": "UpToDate, OutOfDate",
            "TDX_ATTEST_TRUST_ROOT": "/etc/root.der",
        }
    )
    assert settings.nonce_ttl_seconds == 45
    assert settings.dev_mode is True
    assert settings.collateral_fetch_timeout_seconds == 2.5
    assert settings.allowed_tcb_statuses == ("UpToDate", "OutOfDate")
    assert settings.trust_root == Path("/etc/root.der")


def test_a_toml_value_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text("nonce_ttl_seconds = true\n")
    with pytest.raises(ConfigurationError, match=r"nonce_ttl_seconds.*expected an integer"):
        Settings.load(environ={}, config_file=config)
