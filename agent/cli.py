"""``tdx-boot-agent``: command-line entry point (``main(argv=None)``, one top-level handler)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from tdx_boot_attest.agent.command_line import run_command
from tdx_boot_attest.agent.config import (
    DEFAULT_CMDLINE_PATH,
    DEFAULT_CONFIG_PATH,
    Config,
    load_config,
)
from tdx_boot_attest.agent.console import DEFAULT_KMSG, Console
from tdx_boot_attest.agent.errors import AgentError, ConfigError, LocalReason
from tdx_boot_attest.agent.package_info import version_line

EXIT_OK: Final = 0
EXIT_INTERNAL: Final = 1
EXIT_INTERRUPTED: Final = 130
# 128 + SIGPIPE: what the shell reports for a tool whose output reader went away.
# The keyscript contract is about file descriptor 1, whatever sys.stdout is.
STDOUT_FD: Final = 1

EXIT_CODES_HELP: Final = """\
exit codes:
  0  success
  1  internal error (a bug: run again with --verbose for the traceback)
  2  bad configuration, usage or hotkey/token file (nothing was sent to the server)
  3  configfs-tsm could not produce a quote (no TD, wrong provider, EIO, ETIMEDOUT, ...),
     or the firmware event log is required but unusable, or does not replay to the quote,
     or this boot's identity key cannot be kept in memory or read (identity_unavailable)
  4  server unreachable until the deadline, TLS refused, or an unusable answer
  5  the server refused (its reason code is on the console line)
  6  the device did not appear, or cryptsetup did not open it
  7  the failure action (poweroff, reboot, askpass) could not be run
  141 standard output was closed by its reader (e.g. | head -1); nothing is printed

every failure prints one line to /dev/kmsg and stderr:
  tdx-boot-attest: FAILED reason=<code> message="<what happened>"
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand. Raises nothing."""
    common = argparse.ArgumentParser(add_help=False)
    config_help = f"configuration file (default {DEFAULT_CONFIG_PATH}; must exist when given)"
    # --config is accepted before and after the command; SUPPRESS keeps the command's
    # parser from resetting a value given before it.
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=config_help)
    common.add_argument(
        "--cmdline",
        type=Path,
        default=DEFAULT_CMDLINE_PATH,
        help=f"kernel command line to read tdx_attest.* keys from (default {DEFAULT_CMDLINE_PATH})",
    )
    common.add_argument(
        "--kmsg",
        type=Path,
        default=DEFAULT_KMSG,
        help=f"kernel log device for console lines, used when present (default {DEFAULT_KMSG})",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")

    parser = argparse.ArgumentParser(
        prog="tdx-boot-agent",
        description="Attestation-gated LUKS unlock for Intel TDX VMs.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, default=None, help=config_help)
    parser.add_argument("--version", action="version", version=version_line("tdx-boot-agent"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            parents=[common],
            help=help_text,
            description=help_text,
            epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    boot = add("boot", "attest, fetch the key and open every configured volume")
    boot.add_argument(
        "--volume", action="append", default=None, help="only this volume (repeatable)"
    )
    boot.set_defaults(handler=_cmd_boot)

    keyscript = add("keyscript", "attest and print only the key on stdout (crypttab keyscript=)")
    keyscript.set_defaults(handler=_cmd_keyscript)

    quote = add("quote", "offline: read a quote and show what the server would see")
    quote.add_argument(
        "--report-data",
        default="00" * 64,
        metavar="HEX128",
        help="REPORTDATA to quote, 128 hex characters (default zeros)",
    )
    quote.add_argument("--in", dest="quote_in", type=Path, help="parse this quote file instead")
    quote.add_argument("--out", type=Path, help="also save the raw quote to this file")
    quote.add_argument("--tsm-root", type=Path, help="configfs-tsm report directory")
    quote.add_argument("--json", action="store_true", help="print one JSON object")
    quote.set_defaults(handler=_cmd_quote)

    eventlog = add(
        "eventlog", "offline: show the firmware event log, its replay and a fresh quote's RTMRs"
    )
    eventlog.add_argument("--event-log", type=Path, help="read this log instead (default: config)")
    eventlog.add_argument("--tsm-root", type=Path, help="configfs-tsm report directory")
    eventlog.add_argument(
        "--no-quote", action="store_true", help="do not compare with a fresh quote"
    )
    eventlog.add_argument("--json", action="store_true", help="print one JSON object")
    eventlog.set_defaults(handler=_cmd_eventlog)

    check = add("check", "check configuration, server reachability and the TSM (no key)")
    check.set_defaults(handler=_cmd_check)

    runtime = add("runtime", "runtime attestation of a registered server (after boot)")
    runtime.add_argument("--server-id", required=True, help="the server's registered id")
    auth = runtime.add_mutually_exclusive_group(required=True)
    auth.add_argument("--hotkey-file", type=Path, help="miner hotkey JSON file (sr25519)")
    auth.add_argument(
        "--token",
        type=Path,
        metavar="FILE",
        help="file holding a bearer token ('-' reads stdin; never pass the token itself)",
    )
    runtime.set_defaults(handler=_cmd_runtime)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command in ``argv`` (default sys.argv[1:]); return the exit code
    (141 when the reader of standard output went away).

    Every AgentError becomes one console line and its exit code; anything else is
    an internal error (exit 1). Raises only SystemExit from argument parsing.
    """
    return run_command(lambda: _main(argv))


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(kmsg=args.kmsg)
    handler: Callable[[argparse.Namespace, Console], int] = args.handler
    try:
        return handler(args, console)
    except BrokenPipeError:
        raise  # main() ends quietly: the reader of standard output went away
    except AgentError as exc:
        if not exc.reported:
            console.failure(exc.reason, exc.message)
        _traceback(args)
        return exc.exit_code
    except KeyboardInterrupt:
        console.failure(LocalReason.INTERRUPTED, "stopped by SIGINT")
        return EXIT_INTERRUPTED
    except Exception as exc:
        console.failure(
            LocalReason.INTERNAL_ERROR,
            f"{type(exc).__name__}: {exc} (run with --verbose for the traceback)",
        )
        _traceback(args)
        return EXIT_INTERNAL


def _traceback(args: argparse.Namespace) -> None:
    if args.verbose:
        import traceback

        traceback.print_exc()


def _config(args: argparse.Namespace, *, require_server: bool = True) -> Config:
    return load_config(
        args.config or DEFAULT_CONFIG_PATH,
        args.cmdline,
        require_file=args.config is not None,
        require_server=require_server,
    )


def _fail(console: Console, exc: AgentError, args: argparse.Namespace) -> AgentError:
    """Print the failure line now (before the failure action runs) and mark it reported."""
    console.failure(exc.reason, exc.message)
    exc.reported = True
    _traceback(args)
    return exc


def _cmd_boot(args: argparse.Namespace, console: Console) -> int:
    from tdx_boot_attest.agent.boot import BootContext, unlock_volumes

    config = _config(args)
    volumes = config.volumes
    if args.volume:
        unknown = [name for name in args.volume if config.volume(name) is None]
        if unknown:
            raise ConfigError(
                f"--volume {unknown[0]!r} is not configured", LocalReason.VOLUME_UNKNOWN
            )
        volumes = tuple(v for v in volumes if v.name in args.volume)
    try:
        unlock_volumes(BootContext(config, console), volumes)
    except ConfigError:
        raise
    except AgentError as exc:
        _fail(console, exc, args)
        from tdx_boot_attest.agent.actions import FailureActions

        FailureActions(config).run()
        return exc.exit_code
    return EXIT_OK


def _cmd_keyscript(args: argparse.Namespace, console: Console) -> int:
    from tdx_boot_attest.agent.boot import BootContext, keyscript

    config = _config(args)
    volume = os.environ.get("CRYPTTAB_NAME") or None
    try:
        keyscript(BootContext(config, console), volume, STDOUT_FD)
    except ConfigError:
        raise
    except AgentError as exc:
        _fail(console, exc, args)
        from tdx_boot_attest.agent.actions import FailureActions
        from tdx_boot_attest.agent.config import FailureAction

        actions = FailureActions(config)
        if config.on_failure is FailureAction.PROMPT:
            status = actions.ask_passphrase(volume or "the encrypted volume")
            # askpass wrote the typed passphrase to our stdout: cryptroot can go on.
            return EXIT_OK if status == 0 else exc.exit_code
        actions.run()
        return exc.exit_code
    return EXIT_OK


def _cmd_quote(args: argparse.Namespace, console: Console) -> int:
    from tdx_boot_attest.agent.quote import parse_quote

    if args.quote_in is not None:
        try:
            quote = args.quote_in.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read --in {args.quote_in}: {exc.strerror}") from None
    else:
        try:
            report_data = bytes.fromhex(args.report_data)
        except ValueError:
            raise ConfigError("--report-data is not hexadecimal") from None
        if len(report_data) != 64:
            raise ConfigError(f"--report-data must be 64 bytes, got {len(report_data)}")
        tsm_root = args.tsm_root or _config(args, require_server=False).tsm_root
        from tdx_boot_attest.agent.boot import file_ops
        from tdx_boot_attest.agent.tsm import TsmQuoteProvider

        quote = TsmQuoteProvider(tsm_root, file_ops()).get_quote(report_data)
    if args.out is not None:
        try:
            args.out.write_bytes(quote)
        except OSError as exc:
            raise ConfigError(f"cannot write --out {args.out}: {exc.strerror}") from None
    summary = parse_quote(quote)
    fields = summary.as_hex()
    if args.json:
        print(json.dumps({"version": summary.version, "debug": summary.debug, **fields}))
        return EXIT_OK
    print(f"quote version      {summary.version} ({len(quote)} bytes)")
    print(f"debug TD           {'YES (a server refuses it)' if summary.debug else 'no'}")
    for name in (
        "mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrconfigid", "mrowner",
        "mrownerconfig", "td_attributes", "xfam", "tee_tcb_svn", "mrseam", "report_data",
    ):  # fmt: skip
        print(f"{name:<18} {fields[name]}")
    return EXIT_OK


def _cmd_eventlog(args: argparse.Namespace, console: Console) -> int:
    from tdx_boot_attest.agent.ccel import EventLogMismatch, EventLogUnavailable, read_event_log
    from tdx_boot_attest.agent.eventlog import parse_event_log

    path: Path
    tsm_root: Path | None
    if args.event_log is not None and (args.tsm_root is not None or args.no_quote):
        path, tsm_root = args.event_log, args.tsm_root
    else:
        config = _config(args, require_server=False)
        path = args.event_log or config.event_log_path
        tsm_root = args.tsm_root or config.tsm_root
    read = read_event_log(path)
    if read.data is None:
        raise EventLogUnavailable(read.problem or f"no event log at {path}")
    log = parse_event_log(read.data)
    replayed = log.replay()
    quoted = None if args.no_quote or tsm_root is None else _quoted_rtmrs(tsm_root)
    report = _eventlog_report(path, log, replayed, quoted)
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        _print_eventlog(report)
    differing = [name for name, same in report["matches"].items() if same is False]
    if differing:
        raise EventLogMismatch(
            f"the event log {path} does not replay to this TD's quote: "
            f"{', '.join(differing)} differ (the log is not this boot's)"
        )
    return EXIT_OK


def _quoted_rtmrs(tsm_root: Path) -> tuple[bytes, ...]:
    from tdx_boot_attest.agent.boot import file_ops
    from tdx_boot_attest.agent.quote import parse_quote
    from tdx_boot_attest.agent.tsm import TsmQuoteProvider

    quote = TsmQuoteProvider(tsm_root, file_ops()).get_quote(bytes(64))
    fields = parse_quote(quote).fields
    return tuple(fields[f"rtmr{n}"] for n in range(4))


def _eventlog_report(
    path: Path, log: Any, replayed: tuple[bytes, ...], quoted: tuple[bytes, ...] | None
) -> dict[str, Any]:
    from tdx_boot_attest.agent.eventlog import event_to_json

    covered = log.covered()
    matches: dict[str, bool | None] = {}
    for n in range(4):
        if quoted is None or n not in covered:
            matches[f"rtmr{n}"] = None
        else:
            matches[f"rtmr{n}"] = replayed[n] == quoted[n]
    return {
        "path": str(path),
        "length": log.length,
        "events": [event_to_json(event) for event in log.events],
        "replayed": {f"rtmr{n}": value.hex() for n, value in enumerate(replayed)},
        "covered": [f"rtmr{n}" for n in sorted(covered)],
        "quote": None if quoted is None else {f"rtmr{n}": v.hex() for n, v in enumerate(quoted)},
        "matches": matches,
    }


def _print_eventlog(report: dict[str, Any]) -> None:
    print(f"event log {report['path']}: {len(report['events'])} events, {report['length']} bytes")
    for event in report["events"]:
        register = "-" if event["rtmr"] is None else f"rtmr{event['rtmr']}"
        print(f"  {event['index']:>3} {register:<6} {event['sha384'][:16]}  {event['name']}")
    for name, value in report["replayed"].items():
        same = report["matches"][name]
        if name not in report["covered"]:
            verdict = "not covered by the log"
        elif same is None:
            verdict = "not compared with a quote"
        elif same:
            verdict = "equals the quote"
        else:
            verdict = f"DIFFERS from the quote's {report['quote'][name]}"
        print(f"{name} {value}  {verdict}")


def _cmd_check(args: argparse.Namespace, console: Console) -> int:
    from tdx_boot_attest.agent.boot import BootContext
    from tdx_boot_attest.agent.http_client import Deadline

    failures: list[AgentError] = []
    config = _config(args)
    print(f"ok     config: server {config.server_url}, {len(config.volumes)} volume(s)")
    context = BootContext(config, console)
    try:
        provider = context.quote_provider().check_provider()
        print(f"ok     tsm: {config.tsm_root} provider {provider}")
    except AgentError as exc:
        failures.append(exc)
        print(f"FAILED tsm: {exc.reason}: {exc.message}")
    failures += _check_event_log(config)
    failures += _check_identity(config)
    try:
        client = context.client()
        client.get_nonce(Deadline.after(config.connect_timeout + config.read_timeout))
        print(f"ok     server: {config.server_url} answers (a nonce was issued)")
    except AgentError as exc:
        failures.append(exc)
        print(f"FAILED server: {exc.reason}: {exc.message}")
    for volume in config.volumes:
        try:
            device = context.waiter.wait(volume.device, 0.01)
            print(f"ok     volume {volume.name}: {volume.device} is {device}")
        except AgentError as exc:
            failures.append(exc)
            print(f"FAILED volume {volume.name}: {exc.reason}: {exc.message}")
    if failures:
        for failure in failures:
            console.failure(failure.reason, failure.message)
        return failures[0].exit_code
    return EXIT_OK


def _check_event_log(config: Config) -> list[AgentError]:
    from tdx_boot_attest.agent.ccel import EventLogUnavailable, read_event_log
    from tdx_boot_attest.agent.eventlog import parse_event_log

    read = read_event_log(config.event_log_path)
    if read.data is not None:
        count = len(parse_event_log(read.data).events)
        print(f"ok     eventlog: {config.event_log_path}, {count} events, {len(read.data)} bytes")
        return []
    if config.event_log_required:
        print(f"FAILED eventlog: {read.problem}")
        return [EventLogUnavailable(f"{read.problem}; [eventlog] required = true")]
    print(f"note   eventlog: {read.problem}; attestation goes without it")
    return []


def _check_identity(config: Config) -> list[AgentError]:
    from tdx_boot_attest.agent.identity import IdentityUnavailable, check_in_memory, load_identity

    path = config.identity_path
    try:
        if path.exists() or path.is_symlink():
            identity = load_identity(path)
            print(f"ok     identity: {path}, Ed25519 public key {identity.public_key.hex()}")
        else:
            existing = next(p for p in path.parents if p.exists())
            check_in_memory(existing)
            print(f"note   identity: none yet at {path}; the boot attestation makes it")
    except IdentityUnavailable as exc:
        print(f"FAILED identity: {exc.message}")
        return [exc]
    return []


def _cmd_runtime(args: argparse.Namespace, console: Console) -> int:
    from tdx_boot_attest.agent.auth import BearerSigner, HotkeyError, HotkeySigner, RequestSigner
    from tdx_boot_attest.agent.boot import BootContext
    from tdx_boot_attest.agent.identity import load_identity
    from tdx_boot_attest.agent.runtime import attest_runtime

    config = _config(args)
    identity = load_identity(config.identity_path)
    signer: RequestSigner
    if args.hotkey_file is not None:
        signer = HotkeySigner.from_file(args.hotkey_file)
    else:
        try:
            text = sys.stdin.read() if str(args.token) == "-" else args.token.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise HotkeyError(f"cannot read the token file {args.token}: {exc}") from None
        token = text.strip()
        if not token or any(c.isspace() for c in token):
            raise HotkeyError("the token file must hold one token on one line")
        signer = BearerSigner(token)
    answer = attest_runtime(
        BootContext(config, console).client(), signer, identity, args.server_id, config.deadline
    )
    print(json.dumps(answer, sort_keys=True))
    console.success("runtime attestation", server_id=args.server_id)
    return EXIT_OK
