"""Process set-up shared by the CLI and uvicorn worker processes: logging (text or JSON
lines), the start-up report of the effective configuration, and the collector tuning.

It imports neither the app nor the CLI, so both can import it.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import socket
import sys
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from tdx_boot_attest.server.context import ServerContext
from tdx_boot_attest.server.db.engine import session_scope
from tdx_boot_attest.server.db.models import Image
from tdx_boot_attest.server.settings import Settings

LOG = logging.getLogger("tdx_attest.server")
# Our loggers, and uvicorn's when the format is JSON (so every line is JSON).
OWN_LOGGERS: Final = ("tdx_attest",)
UVICORN_LOGGERS: Final = ("uvicorn", "uvicorn.error", "uvicorn.access")
GC_YOUNG_THRESHOLD: Final = 20_000
SWITCH_INTERVAL_SECONDS: Final = 0.05
PCCS_PROBE_SECONDS: Final = 3.0


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger and message. A message that is
    itself a JSON object (the attestation line) has its fields merged in."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON. Raises nothing."""
        message = record.getMessage()
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        parsed: Any = None
        if message.startswith("{"):
            try:
                parsed = json.loads(message)
            except ValueError:
                parsed = None
        if isinstance(parsed, dict):
            line.update({key: value for key, value in parsed.items() if key not in line})
        else:
            line["message"] = message
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, sort_keys=False, default=str)


def configure_logging(level: str, log_format: str = "text") -> None:
    """Send log lines to standard error: our own as they are (text), or every line,
    uvicorn's included, as JSON. Raises nothing (an unknown format counts as text)."""
    handler = logging.StreamHandler(sys.stderr)
    json_lines = log_format == "json"
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter("%(message)s"))
    # For JSON, the root logger too: libraries' lines (alembic's, ...) propagate there.
    names = OWN_LOGGERS + (("", *UVICORN_LOGGERS) if json_lines else ())
    for name in names:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


def uvicorn_log_config(log_format: str) -> dict[str, Any] | None:
    """uvicorn's ``log_config``: None (keep ours) for JSON, its default for text.

    Raises nothing.
    """
    if log_format == "json":
        return None
    from uvicorn.config import LOGGING_CONFIG

    return LOGGING_CONFIG


def tune_garbage_collector() -> None:
    """Exempt start-up objects from collection and collect young objects less often;
    switch threads less often.

    Requests allocate many short-lived objects; the default thresholds run a collection
    every few requests over every long-lived object. Raises nothing.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
    # Verification threads hold the interpreter lock in long stretches (dcap-qvl does not
    # release it); forcing a handover every 5 ms (the default) between them and the event
    # loop costs CPU under load without making anyone faster.
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)


def masked_database_url(url: str) -> str:
    """The database URL with its password replaced by ``***``. Raises nothing."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparsable URL)"


def pccs_reachable(pccs_url: str, timeout: float = PCCS_PROBE_SECONDS) -> bool:
    """Whether a TCP connection to the PCCS host and port opens. Raises nothing."""
    parts = urlsplit(pccs_url)
    if not parts.hostname:
        return False
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def log_effective_configuration(settings: Settings, ctx: ServerContext) -> None:
    """Log what this server will use, and warn when a boot would find no collateral.

    Never logs a secret (the database password is masked; the master key is named by
    its path only). Raises nothing: a database that cannot be read is reported.
    """
    if ctx.trust_root_der is None:
        trust_root = "Intel SGX Root CA (built into dcap-qvl)"
    else:
        fingerprint = hashlib.sha256(ctx.trust_root_der).hexdigest()
        trust_root = f"{settings.trust_root} (SHA-256 {fingerprint})"
    LOG.info("database %s", masked_database_url(settings.database_url))
    LOG.info("trust root %s", trust_root)
    LOG.info("PCCS %s", settings.pccs_url)
    LOG.info("allowed TCB statuses %s", ", ".join(settings.allowed_tcb_statuses))
    try:
        with session_scope(ctx.sessions) as session:
            images = session.scalar(
                select(func.count()).select_from(Image).where(Image.retired_at.is_(None))
            )
        entries = ctx.collateral.entries()
    except SQLAlchemyError as exc:
        LOG.warning("cannot read images and collateral from the database: %s", exc)
        return
    LOG.info("approved images %d", images or 0)
    now = ctx.clock()
    for entry in entries:
        state = "valid" if entry.next_update > now else "EXPIRED"
        LOG.info(
            "collateral FMSPC %s (%s CA) from %s, next update %s (%s)",
            entry.fmspc,
            entry.ca,
            entry.source,
            entry.next_update.isoformat(),
            state,
        )
    if not any(entry.next_update > now for entry in entries):
        if pccs_reachable(settings.pccs_url):
            LOG.info("no valid collateral cached: the first boot of each platform fetches it")
        else:
            LOG.warning(
                "no valid collateral cached and the PCCS at %s is unreachable: boots will be "
                "refused with collateral_unavailable; fix pccs_url or run "
                "'tdx-attest-server collateral import FILE'",
                settings.pccs_url,
            )
