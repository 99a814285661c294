"""The server's settings: one typed object, read from a TOML file and ``TDX_ATTEST_*`` variables.

Precedence: explicit keyword arguments > environment variables > config file > defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tdx_boot_attest.server.bookkeeping import BookkeepingLimits
from tdx_boot_attest.server.db.engine import DatabaseLimits
from tdx_boot_attest.server.errors import ConfigurationError
from tdx_boot_attest.server.platform_policy import PlatformPolicy

ENV_PREFIX = "TDX_ATTEST_"
CONFIG_ENV = "TDX_ATTEST_CONFIG"
LOG_FORMAT_ENV = "TDX_ATTEST_LOG_FORMAT"
LOG_FORMATS = ("text", "json")
DEFAULT_DATABASE_URL = "sqlite:///tdx-attest-server.db"
DEFAULT_PCCS_URL = "https://api.trustedservices.intel.com"
# Variables with the prefix that are not settings: the config file's path, the runtime
# attestation's server id (read by the agent's runtime unit) and the test suite's database.
NON_SETTING_VARIABLES = frozenset({CONFIG_ENV, "TDX_ATTEST_SERVER_ID", "TDX_ATTEST_TEST_PG_URL"})
Parser = Callable[[str, Any], Any]
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


def _parse_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def _parse_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected an integer, got {value!r}")
    return int(value)


def _parse_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _parse_optional_path(name: str, value: Any) -> Path | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str | Path):
        raise ValueError(f"expected a file path, got {value!r}")
    return Path(value)


def _parse_names(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError(f"expected a list or a comma-separated string, got {value!r}")
    return tuple(str(item).strip() for item in items if str(item).strip())


def _parse_http_url(name: str, value: Any) -> str:
    text = _parse_str(name, value)
    parsed = urlsplit(text)
    if parsed.scheme not in {"http", "https"} or not parsed.hostname:
        raise ValueError(f"got {text!r}; expected the form https://host[:port][/path]")
    return text


def _parse_database_url(name: str, value: Any) -> str:
    text = _parse_str(name, value)
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.split("+")[0] not in {"sqlite", "postgresql", "postgres"}:
        raise ValueError(
            f"got {_mask_password(text)!r}; expected sqlite:////abs/path.db, "
            "sqlite:///relative/path.db or postgresql://user@host:5432/db"
        )
    if scheme.startswith("sqlite") and not rest.startswith("/"):
        # sqlite://server.db names a host, not a file: SQLAlchemy would open an
        # in-memory database that every restart loses.
        raise ValueError(
            f"got {text!r}; a SQLite URL has three slashes before a relative path "
            "(sqlite:///relative/path.db) and four before an absolute one "
            "(sqlite:////abs/path.db)"
        )
    return text


def _mask_password(url: str) -> str:
    """``url`` with the password of its user part replaced by ``***``. Raises nothing."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.partition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def _setting(default: Any, parse: Parser) -> Any:
    """A settings field with the function that turns a file or variable value into it."""
    return dataclasses.field(default=default, metadata={"parse": parse})


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server can be configured with (see docs/server.md)."""

    database_url: str = _setting(DEFAULT_DATABASE_URL, _parse_database_url)
    master_key_file: Path | None = _setting(None, _parse_optional_path)  # noqa: RUF009 - a field()
    trust_root: Path | None = _setting(None, _parse_optional_path)  # noqa: RUF009 - a field()
    pccs_url: str = _setting(DEFAULT_PCCS_URL, _parse_http_url)
    allowed_tcb_statuses: tuple[str, ...] = _setting(("UpToDate",), _parse_names)
    nonce_ttl_seconds: int = _setting(600, _parse_int)
    dev_mode: bool = _setting(False, _parse_bool)
    collateral_refresh_margin_seconds: int = _setting(3600, _parse_int)
    collateral_retry_after_seconds: int = _setting(60, _parse_int)
    collateral_fetch_timeout_seconds: float = _setting(10.0, _parse_float)
    collateral_unknown_platform_seconds: int = _setting(600, _parse_int)
    nonce_purge_interval_seconds: int = _setting(60, _parse_int)
    database_connect_timeout_seconds: float = _setting(3.0, _parse_float)
    database_statement_timeout_seconds: float = _setting(5.0, _parse_float)
    database_pool_timeout_seconds: float = _setting(5.0, _parse_float)
    database_retry_after_seconds: int = _setting(5, _parse_int)
    log_level: str = _setting("INFO", _parse_str)
    # "text" (our lines as they are) or "json" (every line, uvicorn's too, one object).
    log_format: str = _setting("text", _parse_str)
    # Refuse boot attestations that come without the firmware's event log (older agents
    # send none, so this is off unless every image's agent sends one).
    require_event_log: bool = _setting(False, _parse_bool)
    # Platform policy (server/platform_policy.py): each pin is not checked while unset.
    allowed_mrseams: tuple[str, ...] = _setting((), _parse_names)
    xfam_value: str = _setting("", _parse_str)
    xfam_mask: str = _setting("", _parse_str)
    td_attributes_value: str = _setting("", _parse_str)
    td_attributes_mask: str = _setting("", _parse_str)
    minimum_tee_tcb_svn: str = _setting("", _parse_str)
    http_keep_alive_seconds: int = _setting(30, _parse_int)
    bookkeeping_max_fields: int = _setting(16, _parse_int)
    bookkeeping_max_bytes: int = _setting(4096, _parse_int)
    # Fleet side: miner authentication, server registry, runtime attestation (docs/fleet.md).
    auth_window_seconds: int = _setting(600, _parse_int)
    # Refuse hotkey signatures in the Chutes form (hotkey, timestamp, body): require the
    # form that also covers the method and path (X-Attest-Signature-Scope: request).
    auth_require_request_scope: bool = _setting(False, _parse_bool)
    registration_requires_boot_attestation: bool = _setting(True, _parse_bool)
    registration_boot_window_seconds: int = _setting(3600, _parse_int)
    runtime_attestation_stale_seconds: int = _setting(3600, _parse_int)
    runtime_attestation_require_host_ip: bool = _setting(True, _parse_bool)
    # Runtime attestation of a server registered from a boot without an identity key
    # (an agent before protocol v2) is refused unless this is switched off.
    runtime_attestation_require_identity: bool = _setting(True, _parse_bool)

    def __post_init__(self) -> None:
        unknown = set(self.allowed_tcb_statuses) - TCB_STATUSES
        if unknown:
            raise ConfigurationError(
                f"allowed_tcb_statuses has unknown status(es): {', '.join(sorted(unknown))}"
            )
        if self.log_format not in LOG_FORMATS:
            raise ConfigurationError(
                f"log_format must be one of {', '.join(LOG_FORMATS)}, not {self.log_format!r}"
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
        fields = _fields()
        values: dict[str, Any] = {}
        path = config_file or (Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None)
        if path is not None:
            values.update(_read_config_file(path))
        _check_variables(env)
        for name in fields:
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None:
                values[name] = raw
        values.update(overrides)
        for name in values:
            _check_known(name, fields, "setting")
        return cls(**{name: _convert(fields[name], name, value) for name, value in values.items()})


def _fields() -> dict[str, Parser]:
    return {f.name: f.metadata["parse"] for f in dataclasses.fields(Settings)}


def _closest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the nearest known name, or nothing. Raises nothing."""
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {matches[0]}?)" if matches else ""


def _check_known(name: str, fields: Mapping[str, Parser], what: str) -> None:
    if name not in fields:
        raise ConfigurationError(
            f"unknown {what} {name!r}{_closest(name, fields)}; "
            "the settings are listed in docs/server.md"
        )


def _check_variables(env: Mapping[str, str]) -> None:
    """Refuse a ``TDX_ATTEST_*`` variable that names no setting (a misspelling would
    otherwise be ignored silently). Raises ConfigurationError."""
    known = {ENV_PREFIX + name.upper() for name in _fields()} | NON_SETTING_VARIABLES
    for variable in sorted(env):
        if variable.startswith(ENV_PREFIX) and variable not in known:
            raise ConfigurationError(
                f"unknown environment variable {variable}{_closest(variable, known)}; "
                "unset it or use a name from docs/server.md"
            )


def _convert(parse: Parser, name: str, value: Any) -> Any:
    try:
        return parse(name, value)
    except ValueError as exc:
        raise ConfigurationError(f"setting {name!r} has an invalid value: {exc}") from None


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"config file {path} is not valid TOML: {exc}") from None
    section = data.get("server", data)
    if not isinstance(section, dict):
        raise ConfigurationError(f"config file {path}: [server] must be a table")
    fields = _fields()
    for key in section:
        if key not in fields:
            raise ConfigurationError(
                f"config file {path}: unknown key {key!r}{_closest(key, fields)}; "
                "the keys are listed in docs/server.md"
            )
    return dict(section)


def _check_parsers() -> None:
    """Every field must say how it is parsed: a new field without a parser is a bug that
    would otherwise surface only when someone sets it. Raises TypeError at import."""
    missing = [f.name for f in dataclasses.fields(Settings) if "parse" not in f.metadata]
    if missing:
        raise TypeError(f"settings without a parser: {', '.join(missing)}")


_check_parsers()
