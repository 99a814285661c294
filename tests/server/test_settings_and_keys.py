"""Settings sources and precedence; the master key file and passphrase sealing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tdx_boot_attest.server.app import create_app
from tdx_boot_attest.server.errors import ConfigurationError
from tdx_boot_attest.server.sealing import (
    MasterKey,
    SealError,
    generate_master_key_file,
    load_master_key,
)
from tdx_boot_attest.server.settings import Settings


def test_defaults() -> None:
    settings = Settings.load(environ={})
    assert settings.database_url.startswith("sqlite:///")
    assert settings.allowed_tcb_statuses == ("UpToDate",)
    assert settings.nonce_ttl_seconds == 600
    assert settings.trust_root is None
    assert settings.dev_mode is False


def test_environment_overrides_config_file(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        '[server]\nnonce_ttl_seconds = 30\npccs_url = "http://pccs.local:8081"\n'
        'allowed_tcb_statuses = ["UpToDate", "SWHardeningNeeded"]\n'
    )
    env = {"TDX_ATTEST_CONFIG": str(config), "TDX_ATTEST_NONCE_TTL_SECONDS": "45"}
    settings = Settings.load(environ=env)
    assert settings.nonce_ttl_seconds == 45
    assert settings.pccs_url == "http://pccs.local:8081"
    assert settings.allowed_tcb_statuses == ("UpToDate", "SWHardeningNeeded")


def test_environment_lists_and_flags() -> None:
    settings = Settings.load(
        environ={
            "TDX_ATTEST_ALLOWED_TCB_STATUSES": "UpToDate, OutOfDate",
            "TDX_ATTEST_DEV_MODE": "yes",
            "TDX_ATTEST_TRUST_ROOT": "/etc/tdx/root.pem",
        }
    )
    assert settings.allowed_tcb_statuses == ("UpToDate", "OutOfDate")
    assert settings.dev_mode is True
    assert settings.trust_root == Path("/etc/tdx/root.pem")


@pytest.mark.parametrize(
    "env",
    [
        {"TDX_ATTEST_ALLOWED_TCB_STATUSES": "Great"},
        {"TDX_ATTEST_NONCE_TTL_SECONDS": "soon"},
        {"TDX_ATTEST_NONCE_TTL_SECONDS": "0"},
        {"TDX_ATTEST_DEV_MODE": "maybe"},
    ],
)
def test_bad_values_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        Settings.load(environ=env)


def test_unknown_config_key_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text("nonce_tll = 3\n")
    with pytest.raises(ConfigurationError, match="nonce_tll"):
        Settings.load(environ={}, config_file=config)


def test_master_key_file_is_private_and_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    generate_master_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(bytes.fromhex(path.read_text().strip())) == 32
    with pytest.raises(ConfigurationError, match="exists"):
        generate_master_key_file(path)


def test_group_readable_master_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    generate_master_key_file(path)
    os.chmod(path, 0o640)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        load_master_key(path, dev_mode=False)


def test_server_refuses_to_start_without_master_key(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite")
    with pytest.raises(ConfigurationError, match="master key"):
        create_app(settings)
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite", dev_mode=True))
    assert app.state.ctx.master_key.is_dev


def test_seal_round_trip_bound_to_image_name() -> None:
    key = MasterKey(bytes(range(32)))
    sealed = key.seal(b"luks-pw-abc", "golden")
    assert b"luks-pw-abc" not in sealed
    assert key.unseal(sealed, "golden") == b"luks-pw-abc"
    with pytest.raises(SealError):
        key.unseal(sealed, "other-image")
    with pytest.raises(SealError):
        MasterKey(bytes(32)).unseal(sealed, "golden")
    assert "redacted" in repr(key)
