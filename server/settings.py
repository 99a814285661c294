"""The server's settings: one typed object, read from a TOML file and ``TDX_ATTEST_*`` variables.

Precedence: explicit keyword arguments > environment variables > config file > defaults.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tdx_boot_attest.server.bookkeeping import BookkeepingLimits
from tdx_boot_attest.server.db.engine import DatabaseLimits
from tdx_boot_attest.server.errors import ConfigurationError
from tdx_boot_attest.server.platform_policy import PlatformPolicy

ENV_PREFIX = "TDX_ATTEST_"
CONFIG_ENV = "TDX_ATTEST_CONFIG"
DEFAULT_DATABASE_URL = "sqlite:///tdx-attest-server.db"
DEFAULT_PCCS_URL = "https://api.trustedservices.intel.com"
TCB_STATUSES = frozenset(
    {
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
        "Revoked",
    }
)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server can be configured with (see docs/server.md)."""

    database_url: str = DEFAULT_DATABASE_URL
    master_key_file: Path | None = None
    trust_root: Path | None = None
    pccs_url: str = DEFAULT_PCCS_URL
    allowed_tcb_statuses: tuple[str, ...] = ("UpToDate",)
    nonce_ttl_seconds: int = 600
    dev_mode: bool = False
    collateral_refresh_margin_seconds: int = 3600
    collateral_retry_after_seconds: int = 60
    collateral_fetch_timeout_seconds: float = 10.0
    collateral_unknown_platform_seconds: int = 600
    nonce_purge_interval_seconds: int = 60
    database_connect_timeout_seconds: float = 3.0
    database_statement_timeout_seconds: float = 5.0
    database_pool_timeout_seconds: float = 5.0
    database_retry_after_seconds: int = 5
    log_level: str = "INFO"
    # Refuse boot attestations that come without the firmware's event log (older agents
    # send none, so this is off unless every image's agent sends one).
    require_event_log: bool = False
    # Platform policy (server/platform_policy.py): each pin is not checked while unset.
    allowed_mrseams: tuple[str, ...] = ()
    xfam_value: str = ""
    xfam_mask: str = ""
    td_attributes_value: str = ""
    td_attributes_mask: str = ""
    minimum_tee_tcb_svn: str = ""
    http_keep_alive_seconds: int = 30
    bookkeeping_max_fields: int = 16
    bookkeeping_max_bytes: int = 4096
    # Fleet side: miner authentication, server registry, runtime attestation (docs/fleet.md).
    auth_window_seconds: int = 600
    # Refuse hotkey signatures in the Chutes form (hotkey, timestamp, body): require the
    # form that also covers the method and path (X-Attest-Signature-Scope: request).
    auth_require_request_scope: bool = False
    registration_requires_boot_attestation: bool = True
    registration_boot_window_seconds: int = 3600
    runtime_attestation_stale_seconds: int = 3600
    runtime_attestation_require_host_ip: bool = True
    # Runtime attestation of a server registered from a boot without an identity key
    # (an agent before protocol v2) is refused unless this is switched off.
    runtime_attestation_require_identity: bool = True

    def __post_init__(self) -> None:
        unknown = set(self.allowed_tcb_statuses) - TCB_STATUSES
        if unknown:
            raise ConfigurationError(
                f"allowed_tcb_statuses has unknown status(es): {', '.join(sorted(unknown))}"
            )
        if not self.allowed_tcb_statuses:
            raise ConfigurationError("allowed_tcb_statuses must name at least one status")
        if self.nonce_ttl_seconds <= 0:
            raise ConfigurationError("nonce_ttl_seconds must be positive")
        if self.collateral_refresh_margin_seconds < 0:
            raise ConfigurationError("collateral_refresh_margin_seconds must not be negative")
        for name in (
            "http_keep_alive_seconds",
            "collateral_fetch_timeout_seconds",
            "collateral_unknown_platform_seconds",
            "database_connect_timeout_seconds",
            "database_statement_timeout_seconds",
            "database_pool_timeout_seconds",
            "database_retry_after_seconds",
            "bookkeeping_max_fields",
            "bookkeeping_max_bytes",
            "auth_window_seconds",
            "registration_boot_window_seconds",
            "runtime_attestation_stale_seconds",
        ):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be positive")
        self.platform_policy()

    def platform_policy(self) -> PlatformPolicy:
        """The parsed platform pins. Raises ConfigurationError naming a bad setting."""
        return PlatformPolicy.parse(
            allowed_mrseams=self.allowed_mrseams,
            xfam_value=self.xfam_value,
            xfam_mask=self.xfam_mask,
            td_attributes_value=self.td_attributes_value,
            td_attributes_mask=self.td_attributes_mask,
            minimum_tee_tcb_svn=self.minimum_tee_tcb_svn,
        )

    @property
    def database_limits(self) -> DatabaseLimits:
        """How long a request may wait on the database. Raises nothing."""
        return DatabaseLimits(
            connect_timeout_seconds=self.database_connect_timeout_seconds,
            statement_timeout_seconds=self.database_statement_timeout_seconds,
            pool_timeout_seconds=self.database_pool_timeout_seconds,
        )

    @property
    def bookkeeping_limits(self) -> BookkeepingLimits:
        """The caps on the bookkeeping fields stored with a boot attempt. Raises nothing."""
        return BookkeepingLimits(self.bookkeeping_max_fields, self.bookkeeping_max_bytes)

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        config_file: Path | None = None,
        **overrides: Any,
    ) -> Settings:
        """Build settings from a TOML file, then ``TDX_ATTEST_*`` variables, then ``overrides``.

        Raises ConfigurationError for an unreadable file, an unknown key or a bad value.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        path = config_file or (Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None)
        if path is not None:
            values.update(_read_config_file(path))
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = raw
        values.update(overrides)
        return cls(**{name: _coerce(name, value) for name, value in values.items()})


def _field_types() -> dict[str, str]:
    return {f.name: str(f.type) for f in dataclasses.fields(Settings)}


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"config file {path} is not valid TOML: {exc}") from None
    section = data.get("server", data)
    if not isinstance(section, dict):
        raise ConfigurationError(f"config file {path}: [server] must be a table")
    return dict(section)


def _coerce(name: str, value: Any) -> Any:
    kind = _field_types().get(name)
    if kind is None:
        raise ConfigurationError(f"unknown setting {name!r}")
    try:
        if kind == "bool":
            return _to_bool(value)
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "Path | None":
            return Path(value) if value not in (None, "") else None
        if kind == "tuple[str, ...]":
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(item).strip() for item in items if str(item).strip())
        return str(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"setting {name!r} has an invalid value") from None


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(text)
