"""Logging set-up: JSON lines, and the effective configuration reported at start-up."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tdx_boot_attest.server.clock import system_clock
from tdx_boot_attest.server.collateral_cache import import_collateral
from tdx_boot_attest.server.context import ServerContext
from tdx_boot_attest.server.db.migrate import upgrade
from tdx_boot_attest.server.errors import ConfigurationError
from tdx_boot_attest.server.log_setup import (
    JsonFormatter,
    configure_logging,
    log_effective_configuration,
    masked_database_url,
)
from tdx_boot_attest.server.settings import Settings
from tdx_boot_attest.tdxsim.state import SimState


@pytest.fixture(autouse=True)
def restore_loggers() -> Iterator[None]:
    names = ("", "tdx_attest", "uvicorn", "uvicorn.error", "uvicorn.access")
    saved = {
        name: (list(logging.getLogger(name).handlers), logging.getLogger(name).level)
        for name in names
    }
    yield
    for name, (handlers, level) in saved.items():
        logging.getLogger(name).handlers[:] = handlers
        logging.getLogger(name).setLevel(level)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_json_format_makes_every_line_an_object(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    logging.getLogger("tdx_attest.server").info("ready on %s", "port 1")
    logging.getLogger("uvicorn.error").info("Uvicorn running")
    logging.getLogger("alembic.runtime.migration").info("Running upgrade")
    logging.getLogger("tdx_attest.attestation").info(json.dumps({"event": "boot", "ok": True}))
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["logger"] for line in lines] == [
        "tdx_attest.server",
        "uvicorn.error",
        "alembic.runtime.migration",
        "tdx_attest.attestation",
    ]
    assert lines[0]["message"] == "ready on port 1"
    assert lines[0]["level"] == "INFO"
    assert lines[3]["event"] == "boot" and lines[3]["ok"] is True


def test_text_format_keeps_lines_as_they_are(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "text")
    logging.getLogger("tdx_attest.server").info("ready")
    assert capsys.readouterr().err == "ready\n"


def test_json_formatter_keeps_the_exception() -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), exc_info=sys.exc_info()
        )
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "failed"
    assert "ValueError: broken" in line["exception"]


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="log_format must be one of text, json"):
        Settings(log_format="xml")
    assert Settings.load(environ={"TDX_ATTEST_LOG_FORMAT": "json"}).log_format == "json"


def test_the_database_password_is_masked() -> None:
    masked = masked_database_url("postgresql://verifier:s3cret-pw@db:5432/tdxattest")
    assert "s3cret-pw" not in masked
    assert masked == "postgresql://verifier:***@db:5432/tdxattest"


def _context(tmp_path: Path, sim: SimState | None, pccs_url: str) -> ServerContext:
    url = f"sqlite:///{tmp_path / 'server.db'}"
    upgrade(url)
    settings = Settings(
        database_url=url,
        dev_mode=True,
        pccs_url=pccs_url,
        trust_root=None if sim is None else sim.path / "root_ca.der",
        allowed_tcb_statuses=("UpToDate", "SWHardeningNeeded"),
    )
    return ServerContext.build(settings, system_clock)


def test_start_up_names_the_configuration_and_warns_without_collateral(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = SimState.init(tmp_path / "sim", seed=4)
    pccs = f"http://127.0.0.1:{closed_port()}"
    ctx = _context(tmp_path, sim, pccs)
    configure_logging("INFO", "text")
    log_effective_configuration(ctx.settings, ctx)
    err = capsys.readouterr().err
    fingerprint = hashlib.sha256((sim.path / "root_ca.der").read_bytes()).hexdigest()
    assert f"trust root {sim.path / 'root_ca.der'} (SHA-256 {fingerprint})" in err
    assert f"PCCS {pccs}" in err
    assert "allowed TCB statuses UpToDate, SWHardeningNeeded" in err
    assert "approved images 0" in err
    assert f"no valid collateral cached and the PCCS at {pccs} is unreachable" in err
    assert "collateral import" in err


def test_start_up_lists_the_collateral_on_hand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = SimState.init(tmp_path / "sim", seed=5)
    ctx = _context(tmp_path, sim, f"http://127.0.0.1:{closed_port()}")
    held = import_collateral(
        ctx.sessions, (sim.path / "collateral.json").read_text(), system_clock()
    )
    configure_logging("INFO", "text")
    log_effective_configuration(ctx.settings, ctx)
    err = capsys.readouterr().err
    assert f"next update {held.next_update.isoformat()} (valid)" in err
    assert "unreachable" not in err
