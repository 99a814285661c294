"""``serve`` with JSON logs: every line the process writes is one JSON object, and the
start-up report names the effective configuration."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tdx_boot_attest.server.cli import build_parser
from tdx_boot_attest.tdxsim.state import SimState
from tests.support.live_server import live_server

pytestmark = pytest.mark.slow


def test_the_command_line_takes_a_log_format() -> None:
    args = build_parser().parse_args(["serve", "--log-format", "json"])
    assert args.log_format == "json"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--log-format", "xml"])


@pytest.mark.parametrize("workers", [1, 2])
def test_every_line_of_a_json_logging_server_is_json(tmp_path: Path, workers: int) -> None:
    sim = SimState.init(tmp_path / "sim", seed=8)
    with live_server(
        tmp_path / "server",
        f"sqlite:///{tmp_path / 'server.db'}",
        trust_root=sim.path / "root_ca.der",
        collateral_file=sim.path / "collateral.json",
        extra_env={"TDX_ATTEST_LOG_FORMAT": "json"},
        workers=workers,
    ) as server:
        assert httpx.get(server.base_url + "/healthz").status_code == 200
        assert httpx.get(server.base_url + "/no-such-path").status_code == 404
        served = server.logs()
    # The log file also holds the migrate and collateral import commands' output first.
    lines = served[served.index('{"time"') :].splitlines()
    objects = [json.loads(line) for line in lines if line.strip()]
    messages = [entry.get("message", "") for entry in objects]
    assert any(message.startswith("trust root ") and "SHA-256" in message for message in messages)
    assert any(message.startswith("collateral FMSPC ") for message in messages)
    assert any("Uvicorn running" in message or "Started" in message for message in messages)
    assert all({"time", "level", "logger"} <= entry.keys() for entry in objects)
