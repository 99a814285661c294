"""The agent's configuration: an INI file overridden by kernel command-line keys.

File (read with configparser)::

    [server]  url, ca_bundle, allow_http, kem
    [tsm]     root
    [eventlog] path, required
    [boot]    deadline, on_failure, connect_timeout, read_timeout, device_timeout,
              cryptsetup, check_mapper, mapper_dir, poweroff_command, reboot_command,
              askpass_command
    [volume NAME]  device, options

Kernel command line: ``tdx_attest.url=``, ``tdx_attest.ca_bundle=``,
``tdx_attest.allow_http=``, ``tdx_attest.deadline=``, ``tdx_attest.on_failure=``,
``tdx_attest.tsm_root=``, ``tdx_attest.event_log=``; these win over the file. Every
problem is reported as a ConfigError naming the key and where it came from, before any
network traffic.
"""

from __future__ import annotations

import configparser
import enum
import math
import re
import shlex
from pathlib import Path
from typing import Final, NamedTuple
from urllib.parse import urlsplit

from tdx_boot_attest.agent.errors import ConfigError

DEFAULT_CONFIG_PATH: Final = Path("/etc/tdx-boot-attest/agent.conf")
DEFAULT_CMDLINE_PATH: Final = Path("/proc/cmdline")
DEFAULT_TSM_ROOT: Final = Path("/sys/kernel/config/tsm/report")
# The firmware's event log as Linux exposes the ACPI CCEL table's log area.
DEFAULT_EVENT_LOG_PATH: Final = Path("/sys/firmware/acpi/tables/data/CCEL")
# The per-boot identity key (agent.identity): on /run, a tmpfs carried over switch_root.
DEFAULT_IDENTITY_PATH: Final = Path("/run/tdx-boot-attest/identity.key")
CMDLINE_PREFIX: Final = "tdx_attest."
CMDLINE_SOURCE: Final = "the kernel command line"

# Options that would make cryptsetup read the key from somewhere other than our pipe.
_FORBIDDEN_CRYPTSETUP_OPTIONS: Final = ("--key-file", "-d", "--keyfile-offset", "--key-slot")
_MAPPER_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,126}")
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


class FailureAction(enum.StrEnum):
    """What happens when the key cannot be had."""

    PROMPT = "prompt"
    POWEROFF = "poweroff"
    REBOOT = "reboot"


class Volume(NamedTuple):
    """One LUKS volume: its mapper name, device spec (``UUID=...`` or a path), options."""

    name: str
    device: str
    options: tuple[str, ...] = ()


class Config(NamedTuple):
    """The validated configuration; build it with load_config()."""

    server_url: str
    ca_bundle: Path | None = None
    allow_http: bool = False
    kem: str = "x25519"  # an agent.protocol.Kem value
    tsm_root: Path = DEFAULT_TSM_ROOT
    event_log_path: Path = DEFAULT_EVENT_LOG_PATH
    event_log_required: bool = False
    identity_path: Path = DEFAULT_IDENTITY_PATH
    deadline: float = 300.0
    on_failure: FailureAction = FailureAction.PROMPT
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    device_timeout: float = 60.0
    cryptsetup: tuple[str, ...] = ("cryptsetup", "open")
    check_mapper: bool = True
    mapper_dir: Path = Path("/dev/mapper")
    poweroff_command: tuple[str, ...] = ("poweroff", "-f")
    reboot_command: tuple[str, ...] = ("reboot", "-f")
    askpass_command: tuple[str, ...] = ("/lib/cryptsetup/askpass",)
    volumes: tuple[Volume, ...] = ()

    def volume(self, name: str) -> Volume | None:
        """The volume called ``name``, or None. Raises nothing."""
        return next((v for v in self.volumes if v.name == name), None)


class _Value(NamedTuple):
    text: str
    key: str  # as the user wrote it: "[boot] deadline" or "tdx_attest.deadline"
    source: str  # a file path or CMDLINE_SOURCE

    def fail(self, problem: str) -> ConfigError:
        return ConfigError(f"{self.key} in {self.source}: {problem} (got {self.text!r})")


# (section, option) -> kernel command-line key, for the keys the command line may set.
_CMDLINE_KEYS: Final = {
    ("server", "url"): "url",
    ("server", "ca_bundle"): "ca_bundle",
    ("server", "allow_http"): "allow_http",
    ("boot", "deadline"): "deadline",
    ("boot", "on_failure"): "on_failure",
    ("tsm", "root"): "tsm_root",
    ("eventlog", "path"): "event_log",
}
_FILE_KEYS: Final = {
    "server": {"url", "ca_bundle", "allow_http", "kem"},
    "tsm": {"root"},
    "eventlog": {"path", "required"},
    "identity": {"path"},
    "boot": {
        "deadline",
        "on_failure",
        "connect_timeout",
        "read_timeout",
        "device_timeout",
        "cryptsetup",
        "check_mapper",
        "mapper_dir",
        "poweroff_command",
        "reboot_command",
        "askpass_command",
    },
}
_VOLUME_KEYS: Final = {"device", "options"}


def parse_cmdline(text: str) -> dict[str, str]:
    """Split a kernel command line into ``tdx_attest.*`` keys (prefix removed) and values.

    Follows the kernel's own rules: words separated by whitespace, double quotes group.
    A bare ``tdx_attest.key`` (no ``=``) maps to "". Later occurrences win. Raises nothing.
    """
    words: list[str] = []
    current: list[str] = []
    in_quotes = False
    started = False
    for char in text:
        if char == '"':
            in_quotes = not in_quotes
            started = True
        elif char.isspace() and not in_quotes:
            if started:
                words.append("".join(current))
            current, started = [], False
        else:
            current.append(char)
            started = True
    if started:
        words.append("".join(current))
    keys: dict[str, str] = {}
    for word in words:
        name, _, value = word.partition("=")
        if name.startswith(CMDLINE_PREFIX):
            keys[name[len(CMDLINE_PREFIX) :]] = value
    return keys


def load_config(
    path: Path | None = DEFAULT_CONFIG_PATH,
    cmdline_path: Path | None = DEFAULT_CMDLINE_PATH,
    *,
    require_file: bool = False,
    require_server: bool = True,
) -> Config:
    """Read the file at ``path`` and the kernel command line at ``cmdline_path``.

    A missing file is an error only with ``require_file`` (the command line alone may
    configure the agent). Without ``require_server`` a missing server URL is allowed
    (offline diagnostics) and ``server_url`` is "". Raises ConfigError naming the key
    and its source.
    """
    values: dict[tuple[str, str], _Value] = {}
    volumes: list[Volume] = []
    if path is not None:
        text = _read_text(path, required=require_file)
        if text is not None:
            volumes = _read_file(text, str(path), values)
    if cmdline_path is not None:
        cmdline = _read_text(cmdline_path, required=False)
        if cmdline is not None:
            _read_cmdline(cmdline, values)
    return _build(values, volumes, path, require_server=require_server)


def _read_text(path: Path, *, required: bool) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise ConfigError(f"configuration file {path} does not exist") from None
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None


def _read_file(text: str, source: str, values: dict[tuple[str, str], _Value]) -> list[Volume]:
    parser = configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=(";", "#"), default_section="\x00none"
    )
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        raise ConfigError(f"{source}: {exc}".replace("\n", " ")) from None
    volumes: list[Volume] = []
    for section in parser.sections():
        if section.startswith("volume "):
            volumes.append(_read_volume(parser, section, source))
            continue
        allowed = _FILE_KEYS.get(section)
        if allowed is None:
            known = ", ".join(f"[{s}]" for s in (*_FILE_KEYS, "volume NAME"))
            raise ConfigError(f"{source}: unknown section [{section}] (known: {known})")
        for option, text_value in parser.items(section):
            if option not in allowed:
                raise ConfigError(
                    f"{source}: unknown key {option!r} in [{section}] "
                    f"(known: {', '.join(sorted(allowed))})"
                )
            values[(section, option)] = _Value(text_value, f"[{section}] {option}", source)
    names = [v.name for v in volumes]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ConfigError(f"{source}: volume {sorted(duplicates)[0]!r} is defined twice")
    return volumes


def _read_volume(parser: configparser.ConfigParser, section: str, source: str) -> Volume:
    name = section[len("volume ") :].strip()
    where = f"[{section}] in {source}"
    if not _MAPPER_NAME.fullmatch(name):
        raise ConfigError(
            f"{where}: the volume name {name!r} is not a valid mapper name "
            "(letters, digits, . _ + -; no slash)"
        )
    options = dict(parser.items(section))
    unknown = set(options) - _VOLUME_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r} (known: device, options)")
    device = options.get("device", "").strip()
    if not device:
        raise ConfigError(f"{where}: 'device' is required (UUID=... or an absolute path)")
    if device.startswith("UUID="):
        if not re.fullmatch(r"[0-9A-Fa-f-]{1,64}", device[len("UUID=") :]):
            raise ConfigError(f"{where}: device {device!r} is not a valid UUID= spec")
    elif not device.startswith("/"):
        raise ConfigError(f"{where}: device {device!r} must be UUID=... or an absolute path")
    extra = _split_command(_Value(options.get("options", ""), f"[{section}] options", source))
    for option in extra:
        if option.split("=", 1)[0] in _FORBIDDEN_CRYPTSETUP_OPTIONS or (
            option.startswith("-d") and not option.startswith("--")
        ):
            raise ConfigError(
                f"[{section}] options in {source}: {option!r} is not allowed "
                "(the agent supplies the key on stdin itself)"
            )
    return Volume(name=name, device=device, options=tuple(extra))


def _read_cmdline(text: str, values: dict[tuple[str, str], _Value]) -> None:
    keys = parse_cmdline(text)
    by_name = {name: pair for pair, name in _CMDLINE_KEYS.items()}
    for name, text_value in keys.items():
        pair = by_name.get(name)
        if pair is None:
            known = ", ".join(CMDLINE_PREFIX + k for k in sorted(by_name))
            raise ConfigError(
                f"{CMDLINE_PREFIX}{name} in {CMDLINE_SOURCE}: unknown key (known: {known})"
            )
        values[pair] = _Value(text_value, CMDLINE_PREFIX + name, CMDLINE_SOURCE)


def _build(
    values: dict[tuple[str, str], _Value],
    volumes: list[Volume],
    path: Path | None,
    *,
    require_server: bool,
) -> Config:
    url_value = values.get(("server", "url"))
    if not require_server and (url_value is None or not url_value.text.strip()):
        url_value = None
    elif url_value is None or not url_value.text.strip():
        where = f"{path} or {CMDLINE_SOURCE}" if path is not None else CMDLINE_SOURCE
        raise ConfigError(
            f"[server] url is required (set it in {where} as {CMDLINE_PREFIX}url=https://...)"
        )
    allow_http = _bool(values.get(("server", "allow_http")), default=False)
    url = _url(url_value, allow_http=allow_http) if url_value is not None else ""
    ca_bundle = _optional_file(values.get(("server", "ca_bundle")))
    defaults = Config(server_url=url)
    return Config(
        server_url=url,
        ca_bundle=ca_bundle,
        allow_http=allow_http,
        kem=_kem(values.get(("server", "kem"))),
        tsm_root=_path(values.get(("tsm", "root")), defaults.tsm_root),
        event_log_path=_path(values.get(("eventlog", "path")), defaults.event_log_path),
        event_log_required=_bool(
            values.get(("eventlog", "required")), default=defaults.event_log_required
        ),
        identity_path=_path(values.get(("identity", "path")), defaults.identity_path),
        deadline=_seconds(values.get(("boot", "deadline")), defaults.deadline),
        on_failure=_action(values.get(("boot", "on_failure")), defaults.on_failure),
        connect_timeout=_seconds(values.get(("boot", "connect_timeout")), defaults.connect_timeout),
        read_timeout=_seconds(values.get(("boot", "read_timeout")), defaults.read_timeout),
        device_timeout=_seconds(values.get(("boot", "device_timeout")), defaults.device_timeout),
        cryptsetup=_command(values.get(("boot", "cryptsetup")), defaults.cryptsetup),
        check_mapper=_bool(values.get(("boot", "check_mapper")), default=defaults.check_mapper),
        mapper_dir=_path(values.get(("boot", "mapper_dir")), defaults.mapper_dir),
        poweroff_command=_command(
            values.get(("boot", "poweroff_command")), defaults.poweroff_command
        ),
        reboot_command=_command(values.get(("boot", "reboot_command")), defaults.reboot_command),
        askpass_command=_command(values.get(("boot", "askpass_command")), defaults.askpass_command),
        volumes=tuple(volumes),
    )


def _url(value: _Value, *, allow_http: bool) -> str:
    text = value.text.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise value.fail(f"not a valid URL ({exc})") from None
    if parts.scheme == "http" and not allow_http:
        raise value.fail("plain http is refused; use https (or set allow_http = true for tests)")
    if parts.scheme not in ("https", "http"):
        raise value.fail("the URL must start with https://")
    if not parts.hostname:
        raise value.fail("the URL has no host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise value.fail("the URL must not carry credentials, a query or a fragment")
    return text.rstrip("/")


def _kem(value: _Value | None) -> str:
    if value is None:
        return "x25519"
    from tdx_boot_attest.agent.protocol import ProtocolError, parse_kem

    try:
        return parse_kem(value.text.strip()).value
    except ProtocolError as exc:
        raise value.fail(str(exc)) from None


def _bool(value: _Value | None, *, default: bool) -> bool:
    if value is None:
        return default
    text = value.text.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise value.fail("must be true or false")


def _seconds(value: _Value | None, default: float) -> float:
    if value is None:
        return default
    try:
        seconds = float(value.text.strip())
    except ValueError:
        raise value.fail("must be a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise value.fail("must be a positive number of seconds")
    return seconds


def _action(value: _Value | None, default: FailureAction) -> FailureAction:
    if value is None:
        return default
    try:
        return FailureAction(value.text.strip().lower())
    except ValueError:
        choices = " | ".join(a.value for a in FailureAction)
        raise value.fail(f"must be one of {choices}") from None


def _path(value: _Value | None, default: Path) -> Path:
    if value is None:
        return default
    text = value.text.strip()
    if not text.startswith("/"):
        raise value.fail("must be an absolute path")
    return Path(text)


def _optional_file(value: _Value | None) -> Path | None:
    if value is None or not value.text.strip():
        return None
    path = _path(value, Path("/"))
    if not path.is_file():
        raise value.fail("no such file")
    return path


def _split_command(value: _Value) -> list[str]:
    try:
        return shlex.split(value.text)
    except ValueError as exc:
        raise value.fail(f"cannot be split into words ({exc})") from None


def _command(value: _Value | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return default
    words = _split_command(value)
    if not words:
        raise value.fail("must name a command")
    return tuple(words)
