"""``tdx-attest-server``: serve, migrate and administer the verifier."""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from tdx_boot_attest.agent.command_line import run_command
from tdx_boot_attest.agent.measurement.errors import MeasurementError
from tdx_boot_attest.agent.measurement.manifest import Manifest
from tdx_boot_attest.agent.measurement.memory import format_memory_size
from tdx_boot_attest.agent.package_info import version_line
from tdx_boot_attest.server.clock import rfc3339, system_clock
from tdx_boot_attest.server.db.engine import make_engine, make_sessionmaker, session_scope
from tdx_boot_attest.server.db.models import Image
from tdx_boot_attest.server.errors import ServerError
from tdx_boot_attest.server.fleet.admin_cli import add_miner_parser, run_miner_command
from tdx_boot_attest.server.images import (
    Profile,
    ReferenceEvents,
    add_image,
    get_image,
    list_images,
    normalise_measurement,
    profile_from_quote,
    read_quote_file,
    reference_events_from_log,
    retire_image,
    rotate_passphrase,
)
from tdx_boot_attest.server.log_setup import configure_logging, tune_garbage_collector
from tdx_boot_attest.server.measure_cli import (
    MeasureCliError,
    add_image_measure_parser,
    add_platform_parser,
    describe_platform,
    is_measure_command,
    platform_from_args,
)
from tdx_boot_attest.server.measure_cli import measure as measure_image
from tdx_boot_attest.server.measure_cli import run as run_measure_command
from tdx_boot_attest.server.platforms import add_platform, get_platform, list_platforms
from tdx_boot_attest.server.policy import reference_events
from tdx_boot_attest.server.quote import RTMR_NAMES
from tdx_boot_attest.server.sealing import generate_master_key_file, load_master_key
from tdx_boot_attest.server.settings import CONFIG_ENV, LOG_FORMAT_ENV, LOG_FORMATS, Settings

EXIT_REFUSED = 1
EXIT_USAGE = 2
MAX_PORT = 65535
LISTEN_BACKLOG = 2048
CONFIG_HELP = "TOML settings file (TDX_ATTEST_CONFIG); before or after the command"


class CliError(Exception):
    """A command cannot run; the message is printed and the exit status is non-zero."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand. Raises nothing."""
    parser = argparse.ArgumentParser(prog="tdx-attest-server", description=__doc__)
    parser.add_argument("--config", type=Path, help=CONFIG_HELP)
    parser.add_argument("--verbose", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=version_line("tdx-attest-server"))
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP API (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=tcp_port, default=8000, help="1 to 65535")
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="text, or one JSON object per line for every log line (setting log_format)",
    )
    serve.add_argument(
        "--proxy-headers",
        action="store_true",
        help="trust X-Forwarded-For from FORWARDED_ALLOW_IPS (behind a reverse proxy)",
    )

    commands.add_parser("migrate", help="create or upgrade the database schema")

    master_key = commands.add_parser("master-key", help="master key file")
    master_key_commands = master_key.add_subparsers(dest="master_key_command", required=True)
    generate = master_key_commands.add_parser("generate", help="write a new key file (0600)")
    generate.add_argument("file", type=Path)

    image = commands.add_parser("image", help="approved images")
    image_commands = image.add_subparsers(dest="image_command", required=True)
    add = image_commands.add_parser("add", help="register an approved image")
    add.add_argument("name")
    add.add_argument("--from-quote", type=Path, help="take measurements from a golden VM's quote")
    add.add_argument(
        "--from-measurements",
        type=Path,
        metavar="MANIFEST",
        help="take measurements and reference events from a manifest 'image measure' wrote",
    )
    add.add_argument("--mrtd")
    for register in RTMR_NAMES:
        add.add_argument(f"--{register}", help=f"boot {register.upper()} (hex)")
        add.add_argument(f"--runtime-{register}", help=f"runtime {register.upper()} (hex or 'any')")
    add.add_argument("--mrconfigid")
    add.add_argument("--mrowner")
    add.add_argument(
        "--with-config-ids",
        action="store_true",
        help="with --from-quote: also pin MRCONFIGID and MROWNER",
    )
    add.add_argument(
        "--event-log",
        type=Path,
        help="with --from-quote: the golden boot's event log (CCEL), kept as the image's "
        "reference events so refusals name the events that differ",
    )
    add.add_argument("--passphrase-file", type=Path, required=True, help="file or - for stdin")
    show = image_commands.add_parser("show", help="measurements and reference events")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    listing = image_commands.add_parser("list", help="list images")
    listing.add_argument("--all", action="store_true", help="include retired images")
    listing.add_argument("--json", action="store_true")
    retire = image_commands.add_parser("retire", help="stop approving an image")
    retire.add_argument("name")
    rotate = image_commands.add_parser("rotate-passphrase", help="replace the sealed passphrase")
    rotate.add_argument("name")
    rotate.add_argument("--passphrase-file", type=Path, required=True)
    add_image_measure_parser(image_commands)
    add_platform_parser(commands)

    collateral = commands.add_parser("collateral", help="DCAP collateral cache")
    collateral_commands = collateral.add_subparsers(dest="collateral_command", required=True)
    do_import = collateral_commands.add_parser("import", help="import dcap-qvl collateral JSON")
    do_import.add_argument("file", type=Path)
    collateral_commands.add_parser("list", help="list cached collateral")
    eventlog = commands.add_parser("eventlog", help="firmware event logs (offline)")
    eventlog_commands = eventlog.add_subparsers(dest="eventlog_command", required=True)
    show_log = eventlog_commands.add_parser(
        "show", help="parse and replay an event log; with --quote, compare with its RTMRs"
    )
    show_log.add_argument("--event-log", type=Path, required=True, help="CCEL file")
    show_log.add_argument("--quote", type=Path, help="a quote file (raw, hex or base64)")
    show_log.add_argument("--json", action="store_true")
    add_miner_parser(commands)
    _accept_config_after(parser)
    return parser


def _accept_config_after(parser: argparse.ArgumentParser) -> None:
    """Let every subcommand take --config too (``serve --config FILE``). SUPPRESS keeps a
    subcommand from resetting a value given before it. Raises nothing."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in set(action.choices.values()):
                subparser.add_argument(
                    "--config", type=Path, default=argparse.SUPPRESS, help=CONFIG_HELP
                )
                _accept_config_after(subparser)


def tcp_port(text: str) -> int:
    """An argparse type: a TCP port number 1..65535. Raises argparse.ArgumentTypeError."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1 to 65535)") from None
    if not 0 < port <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1 to 65535)")
    return port


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 141 when the reader
    of standard output went away)."""
    return run_command(lambda: _main(argv))


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except BrokenPipeError:
        raise  # main() ends quietly: the reader of standard output went away
    except (ServerError, CliError, MeasureCliError, SQLAlchemyError, OSError) as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"tdx-attest-server: {_describe(exc, args.command)}", file=sys.stderr)
        return EXIT_REFUSED
    except MeasurementError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"tdx-attest-server: {exc.reason}: {exc}", file=sys.stderr)
        return EXIT_REFUSED


def _describe(exc: BaseException, command: str) -> str:
    if isinstance(exc, ServerError):
        return exc.detail()
    if isinstance(exc, SQLAlchemyError):
        return describe_database_error(exc, command)
    if isinstance(exc, OSError):
        return f"{exc.filename or ''}: {exc.strerror or exc}"
    return str(exc)


def describe_database_error(exc: SQLAlchemyError, command: str) -> str:
    """The driver's own message for ``exc``, with what to do when the cause is known.

    ``migrate`` is suggested only for a missing table, and never to ``migrate`` itself.
    Raises nothing.
    """
    cause = getattr(exc, "orig", None) or exc
    message = " ".join(str(cause).split()) or type(cause).__name__
    lowered = message.lower()
    if "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
        hint = "" if command == "migrate" else " (run 'tdx-attest-server migrate' first)"
    elif "unable to open database file" in lowered:
        hint = " (check that the database file's directory exists and is writable)"
    elif "database" in lowered and "does not exist" in lowered:
        hint = " (create the database, e.g. 'createdb NAME', or fix database_url)"
    elif "connection refused" in lowered or "could not connect" in lowered:
        hint = " (check the host and port in database_url and that the server runs)"
    else:
        hint = ""
    return f"database error: {message}{hint}"


def _dispatch(args: argparse.Namespace) -> int:
    if is_measure_command(args):
        return run_measure_command(args)
    if args.command == "master-key":
        if generate_master_key_file(args.file):
            print(f"created the directory {args.file.parent} (mode 0700)")
        print(f"wrote a new master key to {args.file} (mode 0600)")
        return 0
    if args.command == "eventlog":
        return _eventlog_show(args)
    settings = Settings.load(config_file=args.config)
    if args.command == "serve":
        return _serve(settings, args)
    if args.command == "migrate":
        from tdx_boot_attest.server.db.migrate import upgrade

        upgrade(settings.database_url)
        print("database is at the newest revision")
        return 0
    if args.command == "image":
        return _image(settings, args)
    if args.command == "platform":
        return _platform(settings, args)
    if args.command == "miner":
        return run_miner_command(settings, args, system_clock)
    return _collateral(settings, args)


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from tdx_boot_attest.server.app import create_app
    from tdx_boot_attest.server.db.migrate import upgrade
    from tdx_boot_attest.server.log_setup import log_effective_configuration, uvicorn_log_config

    log_format = args.log_format or settings.log_format
    configure_logging(settings.log_level, log_format)
    if settings.database_url.startswith("sqlite"):
        upgrade(settings.database_url)
    else:
        _require_migrated(settings.database_url)
    options = {
        "host": args.host,
        "port": args.port,
        "log_level": settings.log_level.lower(),
        "proxy_headers": args.proxy_headers,
        "access_log": False,
        "log_config": uvicorn_log_config(log_format),
        # An agent's connection idles between its nonce and its attestation while the
        # quote is made; a busy server must not close it in that gap.
        "timeout_keep_alive": settings.http_keep_alive_seconds,
    }
    if args.workers > 1:
        from tdx_boot_attest.server.workers import bind_sockets, run_workers

        # Worker processes import the app themselves and read the same settings.
        if args.config is not None:
            os.environ[CONFIG_ENV] = str(args.config)
        os.environ[LOG_FORMAT_ENV] = log_format
        ctx = create_app(settings).state.ctx
        log_effective_configuration(settings, ctx)
        ctx.engine.dispose()
        try:
            sockets = bind_sockets(args.host, args.port, args.workers)
        except OSError as exc:
            raise _listen_error(args.host, args.port, exc) from None
        return run_workers(sockets, options)
    # The socket is bound here, not by uvicorn, so an address in use is reported like
    # every other start-up error (exit status 1) rather than as uvicorn's exit status 3.
    sock = _listen(args.host, args.port)
    app = create_app(settings)
    log_effective_configuration(settings, app.state.ctx)
    tune_garbage_collector()
    uvicorn.Server(uvicorn.Config(app, **options)).run(sockets=[sock])
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``. Raises CliError naming the address."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise _listen_error(host, port, exc) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise _listen_error(host, port, exc) from None
    return sock


def _listen_error(host: str, port: int, exc: OSError) -> CliError:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EADDRINUSE:
        return CliError(
            f"cannot listen on {host}:{port}: {reason}; another process holds the port "
            "(stop it, e.g. find it with 'ss -ltnp', or choose another --port)"
        )
    return CliError(f"cannot listen on {host}:{port}: {reason}; check --host and --port")


def _require_migrated(database_url: str) -> None:
    from tdx_boot_attest.server.db.migrate import pending_revisions

    engine = make_engine(database_url, pool_size=1)
    try:
        if pending_revisions(engine, database_url):
            raise CliError(
                "the database schema is not at the newest revision: "
                "run 'tdx-attest-server migrate' first"
            )
    finally:
        engine.dispose()


def _read_passphrase(path: Path) -> bytes:
    if str(path) == "-":
        return sys.stdin.buffer.read()
    return path.read_bytes()


def _image(settings: Settings, args: argparse.Namespace) -> int:
    sessions = make_sessionmaker(make_engine(settings.database_url, pool_size=1))
    now = system_clock()
    if args.image_command == "list":
        with session_scope(sessions) as session:
            images = list_images(session, include_retired=args.all)
            rows = [_image_summary(image) for image in images]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                state = "retired" if row["retired_at"] else "active"
                print(f"{row['name']}\t{state}\tmrtd={row['mrtd']}\tcreated={row['created_at']}")
        return 0
    if args.image_command == "retire":
        with session_scope(sessions) as session:
            retire_image(session, args.name, now)
        print(f"retired image {args.name}")
        return 0
    if args.image_command == "show":
        with session_scope(sessions) as session:
            shown = _image_details(get_image(session, args.name))
        _print_image(shown, as_json=args.json)
        return 0
    if args.image_command == "measure":
        with session_scope(sessions) as session:
            platform = get_platform(session, args.platform)
        return measure_image(args, platform)
    master_key = load_master_key(settings.master_key_file, dev_mode=settings.dev_mode)
    passphrase = _read_passphrase(args.passphrase_file)
    if args.image_command == "rotate-passphrase":
        with session_scope(sessions) as session:
            rotate_passphrase(session, master_key, args.name, passphrase, now)
        print(f"rotated the passphrase of image {args.name}")
        return 0
    profile = _profile_from_args(args)
    reference = _reference_from_args(args)
    with session_scope(sessions) as session:
        image = add_image(
            session,
            master_key,
            args.name,
            profile,
            passphrase=passphrase,
            now=now,
            reference=reference,
        )
        summary = _image_summary(image)
    print(json.dumps(summary, indent=2))
    return 0


COLLATERAL_FORM = "dcap-qvl collateral JSON (as in the simulator's collateral.json)"


def _read_text_file(path: Path, expected: str) -> str:
    """``path`` as UTF-8 text. Raises OSError, or CliError naming the expected format."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise CliError(f"{path} is not a text file; expected {expected}") from None


def _read_manifest(path: Path) -> Manifest:
    """A manifest file 'image measure' wrote. Raises CliError or MeasurementError."""
    try:
        document = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CliError(f"{path}: the manifest is not JSON ({exc})") from None
    return Manifest.from_json(document)


def _profile_from_args(args: argparse.Namespace) -> Profile:
    if args.from_measurements is not None:
        if args.from_quote is not None:
            raise CliError("give either --from-quote or --from-measurements, not both")
        manifest = _read_manifest(args.from_measurements)
        rtmrs = tuple(value.hex() for value in manifest.rtmrs)
        base = Profile(
            mrtd=manifest.mrtd.hex(),
            boot_rtmrs=(rtmrs[0], rtmrs[1], rtmrs[2], rtmrs[3]),
            runtime_rtmrs=(rtmrs[0], rtmrs[1], rtmrs[2], rtmrs[3]),
        )
    elif args.from_quote is not None:
        base = profile_from_quote(
            read_quote_file(args.from_quote.read_bytes()), include_config=args.with_config_ids
        )
    else:
        missing = [f"--{n}" for n in ("mrtd", *RTMR_NAMES) if getattr(args, n) is None]
        if missing:
            raise CliError(
                "give --from-quote FILE, --from-measurements MANIFEST or all of: "
                f"{', '.join(missing)}"
            )
        boot = tuple(normalise_measurement(n, getattr(args, n)) for n in RTMR_NAMES)
        base = Profile(
            mrtd=normalise_measurement("mrtd", args.mrtd),
            boot_rtmrs=(boot[0], boot[1], boot[2], boot[3]),
            runtime_rtmrs=(boot[0], boot[1], boot[2], boot[3]),
        )
    mrtd = normalise_measurement("mrtd", args.mrtd) if args.mrtd else base.mrtd
    boot_rtmrs = [
        normalise_measurement(n, getattr(args, n)) if getattr(args, n) else base.boot_rtmrs[i]
        for i, n in enumerate(RTMR_NAMES)
    ]
    runtime_rtmrs = [
        normalise_measurement(f"runtime {n}", value, allow_any=True)
        if (value := getattr(args, f"runtime_{n}"))
        else boot_rtmrs[i]
        for i, n in enumerate(RTMR_NAMES)
    ]
    return Profile(
        mrtd=mrtd,
        boot_rtmrs=(boot_rtmrs[0], boot_rtmrs[1], boot_rtmrs[2], boot_rtmrs[3]),
        runtime_rtmrs=(runtime_rtmrs[0], runtime_rtmrs[1], runtime_rtmrs[2], runtime_rtmrs[3]),
        mrconfigid=normalise_measurement("mrconfigid", args.mrconfigid)
        if args.mrconfigid
        else base.mrconfigid,
        mrowner=normalise_measurement("mrowner", args.mrowner) if args.mrowner else base.mrowner,
    )


def _platform(settings: Settings, args: argparse.Namespace) -> int:
    sessions = make_sessionmaker(make_engine(settings.database_url, pool_size=1))
    if args.platform_command == "add":
        profile = platform_from_args(args)
        with session_scope(sessions) as session:
            add_platform(session, profile, system_clock())
        print(f"added {describe_platform(profile)}")
        return 0
    if args.platform_command == "show":
        with session_scope(sessions) as session:
            profile = get_platform(session, args.name)
        if args.json:
            print(json.dumps(profile.to_json(), indent=2))
        else:
            print(describe_platform(profile))
            for item in profile.events:
                event = item.event
                register = "-" if event.rtmr is None else RTMR_NAMES[event.rtmr]
                digest = (event.sha384 or b"").hex()[:16]
                print(f"  {register:<6} {item.role:<10} {digest}  {event.name}")
        return 0
    with session_scope(sessions) as session:
        for row in list_platforms(session):
            print(
                f"{row.name}\tsha384={row.profile_sha384[:16]}...\tcreated={rfc3339(row.created_at)}"
            )
    return 0


def _reference_from_args(args: argparse.Namespace) -> ReferenceEvents | None:
    if args.from_measurements is not None:
        manifest = _read_manifest(args.from_measurements)
        memory = format_memory_size(manifest.memory_bytes)
        source = (
            f"manifest {args.from_measurements.name} (platform {manifest.platform_name} "
            f"{manifest.platform_sha384.hex()[:16]}..., {memory})"
        )
        return ReferenceEvents(manifest.events, source)
    if args.event_log is None:
        return None
    if args.from_quote is None:
        raise CliError("--event-log needs --from-quote: the log is checked against its quote")
    quote = read_quote_file(args.from_quote.read_bytes())
    source = f"event log {args.event_log.name} of quote {args.from_quote.name}"
    return reference_events_from_log(_read_event_log_file(args.event_log), quote, source)


def _read_event_log_file(path: Path) -> bytes:
    """A CCEL file's records without the padding of its area. Raises CliError."""
    from tdx_boot_attest.agent.eventlog import EventLogError, parse_event_log

    data = path.read_bytes()
    try:
        return data[: parse_event_log(data).length]
    except EventLogError as exc:
        raise CliError(f"{path}: {exc}") from None


def _eventlog_show(args: argparse.Namespace) -> int:
    from tdx_boot_attest.agent.eventlog import event_to_json, parse_event_log

    log = parse_event_log(_read_event_log_file(args.event_log))
    replayed = [value.hex() for value in log.replay()]
    covered = sorted(log.covered())
    quoted = read_quote_file(args.quote.read_bytes()).rtmrs if args.quote else None
    registers = {}
    for n, value in enumerate(replayed):
        same = None if quoted is None or n not in covered else value == quoted[n]
        registers[RTMR_NAMES[n]] = {
            "replayed": value,
            "covered": n in covered,
            "quote": None if quoted is None else quoted[n],
            "matches_quote": same,
        }
    if args.json:
        events = [event_to_json(event) for event in log.events]
        print(json.dumps({"length": log.length, "events": events, "registers": registers}))
    else:
        print(f"{args.event_log}: {len(log.events)} events, {log.length} bytes")
        for event in log.events:
            register = "-" if event.rtmr is None else RTMR_NAMES[event.rtmr]
            digest = (event.sha384 or b"").hex()[:16]
            print(f"  {event.index:>3} {register:<6} {digest}  {event.name}")
        for name, facts in registers.items():
            print(f"{name} {facts['replayed']}  {_replay_verdict(facts)}")
    differing = [name for name, facts in registers.items() if facts["matches_quote"] is False]
    if differing:
        raise CliError(f"the event log does not replay to the quote: {', '.join(differing)} differ")
    return 0


def _replay_verdict(facts: dict[str, Any]) -> str:
    if not facts["covered"]:
        return "not covered by the log"
    if facts["matches_quote"] is None:
        return "(no quote given)"
    return "equals the quote" if facts["matches_quote"] else f"DIFFERS: quote has {facts['quote']}"


def _image_details(image: Image) -> dict[str, Any]:
    from tdx_boot_attest.agent.eventlog import component, event_to_json

    details: dict[str, Any] = dict(_image_summary(image))
    details["reference_source"] = image.reference_source
    events = reference_events(image)
    details["reference_events"] = [
        {**event_to_json(event), "component": component(event)} for event in events
    ]
    return details


def _print_image(details: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(details, indent=2))
        return
    state = "retired " + details["retired_at"] if details["retired_at"] else "active"
    print(f"image {details['name']} ({state}, created {details['created_at']})")
    for key in ("mrtd", *(f"boot_{n}" for n in RTMR_NAMES), *(f"runtime_{n}" for n in RTMR_NAMES)):
        print(f"  {key:<15} {details[key]}")
    for key in ("mrconfigid", "mrowner"):
        if details[key]:
            print(f"  {key:<15} {details[key]}")
    events = details["reference_events"]
    if not events:
        print("  no reference events (register with --event-log or a measurement manifest)")
        return
    print(f"  reference events ({details['reference_source']}):")
    for event in events:
        register = "-" if event["rtmr"] is None else f"rtmr{event['rtmr']}"
        extra = f"  [{event['detail']}]" if event.get("detail") else ""
        print(
            f"    {event['index']:>3} {register:<6} {event['sha384'][:16]}  {event['name']}{extra}"
        )


def _image_summary(image: Image) -> dict[str, str | None]:
    summary: dict[str, str | None] = {
        "name": image.name,
        "mrtd": image.mrtd,
        "mrconfigid": image.mrconfigid,
        "mrowner": image.mrowner,
        "created_at": rfc3339(image.created_at),
        "retired_at": rfc3339(image.retired_at) if image.retired_at else None,
    }
    for index, register in enumerate(RTMR_NAMES):
        summary[f"boot_{register}"] = getattr(image, f"boot_rtmr{index}")
        summary[f"runtime_{register}"] = getattr(image, f"runtime_rtmr{index}")
    return summary


def _collateral(settings: Settings, args: argparse.Namespace) -> int:
    from tdx_boot_attest.server.collateral_cache import import_collateral
    from tdx_boot_attest.server.db.models import CollateralCacheEntry

    sessions = make_sessionmaker(make_engine(settings.database_url, pool_size=1))
    now = system_clock()
    if args.collateral_command == "import":
        collateral = import_collateral(sessions, _read_text_file(args.file, COLLATERAL_FORM), now)
        state = "valid now" if collateral.valid_at(now) else "NOT valid now"
        print(
            f"imported collateral for FMSPC {collateral.fmspc} ({collateral.ca} CA), "
            f"valid {rfc3339(collateral.issued_at)} to {rfc3339(collateral.next_update)} ({state})"
        )
        return 0
    from sqlalchemy import select

    with session_scope(sessions) as session:
        for entry in session.scalars(select(CollateralCacheEntry)):
            print(
                f"{entry.fmspc}\t{entry.ca}\t{entry.source}\t"
                f"{rfc3339(entry.issued_at)}\t{rfc3339(entry.next_update)}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
