"""The console scripts' version and extra checks, against fake distribution metadata."""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path

import pytest

from tdx_boot_attest.agent import __version__ as SOURCE_VERSION
from tdx_boot_attest.agent import package_info

REQUIRES = [
    "requests<3,>=2.28",
    'fastapi<1,>=0.115; extra == "server"',
    "httpx<1,>=0.27 ; extra == 'server'",
    'mfusepy<4,>=3.0; extra == "sim"',
]


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Distributions that count as installed; tdx-boot-attest declares REQUIRES."""
    present = {"requests", "fastapi"}

    def requires(name: str) -> list[str]:
        assert name == package_info.DISTRIBUTION
        return REQUIRES

    def distribution(name: str) -> object:
        if name not in present:
            raise metadata.PackageNotFoundError(name)
        return object()

    monkeypatch.setattr(metadata, "requires", requires)
    monkeypatch.setattr(metadata, "distribution", distribution)
    monkeypatch.setattr(metadata, "version", lambda name: "9.8.7")
    return present


def test_an_extra_lists_only_its_own_requirements(installed: set[str]) -> None:
    assert package_info.extra_requirements("server") == ["fastapi", "httpx"]
    assert package_info.extra_requirements("sim") == ["mfusepy"]
    assert package_info.missing_for_extra("server") == ["httpx"]


def test_a_missing_extra_names_the_pip_command(
    installed: set[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert package_info.require_extra("tdx-attest-server", "server", ["--help"]) == 1
    err = capsys.readouterr().err
    assert "missing: httpx" in err
    assert "pip install 'tdx-boot-attest[server]'" in err


def test_version_works_without_the_extra(
    installed: set[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert package_info.require_extra("tdxsim", "sim", ["--version"]) == 0
    assert capsys.readouterr().out.startswith("tdxsim 9.8.7 (Python 3.")


def test_a_complete_extra_lets_the_command_run(installed: set[str]) -> None:
    installed.add("httpx")
    assert package_info.require_extra("tdx-attest-server", "server", ["serve"]) is None


def test_without_metadata_the_source_version_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    def absent(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", absent)
    monkeypatch.setattr(metadata, "requires", absent)
    assert package_info.version() == SOURCE_VERSION
    assert package_info.extra_requirements("server") == []


def test_the_agent_parser_has_version(capsys: pytest.CaptureFixture[str]) -> None:
    from tdx_boot_attest.agent.cli import build_parser

    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--version"])
    assert exited.value.code == 0
    assert f" {package_info.version()} (Python " in capsys.readouterr().out


def test_hotkey_signing_without_the_runtime_extra_names_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tdx_boot_attest.agent.auth import HotkeyError, HotkeySigner

    hotkey = tmp_path / "hotkey.json"
    hotkey.write_text(json.dumps({"ss58Address": "5Fake", "secretSeed": "00" * 32}))
    # None in sys.modules makes "import sr25519" fail as if it were not installed.
    monkeypatch.setitem(sys.modules, "sr25519", None)
    with pytest.raises(HotkeyError) as refused:
        HotkeySigner.from_file(hotkey)
    assert "pip install 'tdx-boot-attest[runtime]'" in refused.value.message
