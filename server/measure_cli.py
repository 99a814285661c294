"""``image measure`` and ``platform capture``: the measurement calculator's commands.

Neither touches the database or the master key when given files: they read files, call
the pure calculator in ``agent.measurement`` and write JSON. The commands that store or
read the verifier's database (``platform add/show/list``, ``image measure --platform
NAME``, ``image add --from-measurements``) live in server.cli and reuse what is here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from tdx_boot_attest.agent.measurement.linux_boot import INITRD_MAX_ABOVE_4G_FLAG, INITRD_MAX_RULES
from tdx_boot_attest.agent.measurement.manifest import Manifest, compute_manifest
from tdx_boot_attest.agent.measurement.memory import format_memory_size, parse_memory_size
from tdx_boot_attest.agent.measurement.platform import (
    KERNEL_HEADER_MODES,
    KERNEL_HEADER_PATCHED,
    QEMU_ACPI_DATA_SIZE,
    PlatformProfile,
    QemuLoader,
    capture_platform,
)
from tdx_boot_attest.server.images import read_quote_file

MAX_INPUT_BYTES = 1024 * 1024 * 1024
MAX_JSON_BYTES = 16 * 1024 * 1024
MAX_FIRMWARE_BYTES = 64 * 1024 * 1024
MAX_EVENT_LOG_BYTES = 1024 * 1024


class MeasureCliError(Exception):
    """A measurement command cannot run; the message says which file or option."""


def add_image_measure_parser(image_commands: Any) -> None:
    """Add ``image measure`` to the ``image`` subcommands. Raises nothing."""
    measure = image_commands.add_parser(
        "measure", help="compute an image's expected measurements (no database needed)"
    )
    measure.add_argument("--kernel", type=Path, required=True, help="the bzImage (vmlinuz)")
    measure.add_argument("--initrd", type=Path, help="the initrd QEMU gets with -initrd")
    cmdline = measure.add_mutually_exclusive_group(required=True)
    cmdline.add_argument("--cmdline", help="the kernel command line (QEMU -append)")
    cmdline.add_argument(
        "--cmdline-file",
        type=Path,
        help="file holding the command line (one final newline ignored)",
    )
    measure.add_argument("--memory", required=True, help="the TD's memory (2G, 2048M)")
    platform = measure.add_mutually_exclusive_group(required=True)
    platform.add_argument("--platform-file", type=Path, help="platform profile JSON")
    platform.add_argument(
        "--platform", metavar="NAME", help="a platform stored with 'platform add' (database)"
    )
    measure.add_argument("--out", type=Path, help="write the manifest JSON here")
    measure.add_argument("--json", action="store_true", help="print the manifest JSON")


def add_platform_parser(commands: Any) -> None:
    """Add ``platform capture|add|show|list`` to the top-level commands. Raises nothing."""
    platform = commands.add_parser("platform", help="platform profiles (host types)")
    platform_commands = platform.add_subparsers(dest="platform_command", required=True)
    capture = platform_commands.add_parser(
        "capture", help="capture a platform profile from a reference boot (no database needed)"
    )
    _add_capture_arguments(capture)
    capture.add_argument("--out", type=Path, required=True, help="write the profile JSON here")
    add = platform_commands.add_parser(
        "add",
        help="store a platform profile in the database: captured from a reference boot, "
        "or read from a file 'platform capture' wrote",
    )
    _add_capture_arguments(add, from_file=True)
    show = platform_commands.add_parser("show", help="a stored platform (--json: its file form)")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    platform_commands.add_parser("list", help="stored platforms")


def _add_capture_arguments(parser: Any, *, from_file: bool = False) -> None:
    parser.add_argument("name")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-quote", type=Path, help="the reference boot's quote")
    if from_file:
        source.add_argument("--from-file", type=Path, help="a profile 'platform capture' wrote")
    capture = parser
    capture.add_argument(
        "--event-log",
        type=Path,
        help="the reference boot's CCEL (/sys/firmware/acpi/tables/data/CCEL); with --from-quote",
    )
    capture.add_argument("--firmware", type=Path, help="the host's TDVF flash image (OVMF.fd)")
    capture.add_argument("--memory", help="the reference TD's memory size (found if omitted)")
    capture.add_argument(
        "--kernel-header",
        choices=KERNEL_HEADER_MODES,
        default=KERNEL_HEADER_PATCHED,
        help="whether the host's QEMU patches the kernel's setup header (default: patched)",
    )
    capture.add_argument(
        "--initrd-max",
        choices=INITRD_MAX_RULES,
        default=INITRD_MAX_ABOVE_4G_FLAG,
        help="how the host's QEMU bounds the initrd address (default: above-4g-flag, QEMU 7.2+)",
    )


def is_measure_command(args: argparse.Namespace) -> bool:
    """True for the commands this module runs (they need no settings). Raises nothing."""
    command = str(args.command)
    if command == "platform":
        return str(args.platform_command) == "capture"
    return command == "image" and args.image_command == "measure" and args.platform is None


def run(args: argparse.Namespace) -> int:
    """Run ``image measure`` or ``platform capture``; returns the exit status.

    Raises MeasureCliError, MeasurementError, ServerError (a bad quote) or OSError.
    """
    if args.command == "platform":
        profile = platform_from_args(args)
        write_json(args.out, profile.to_json())
        print(f"captured {describe_platform(profile)}; wrote {args.out}")
        return 0
    platform = PlatformProfile.from_json(_read_json(args.platform_file, "platform profile"))
    return measure(args, platform)


def _read(path: Path, limit: int, what: str) -> bytes:
    size = path.stat().st_size
    if size > limit:
        raise MeasureCliError(f"{path}: the {what} is {size} bytes, more than {limit}")
    return path.read_bytes()


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(_read(path, MAX_JSON_BYTES, what))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MeasureCliError(f"{path}: the {what} is not JSON ({exc})") from None


def write_json(path: Path, document: Any) -> None:
    """Write ``document`` to ``path`` atomically (a new file, then a rename). Raises OSError."""
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    directory = path.parent if str(path.parent) else Path(".")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _cmdline(args: argparse.Namespace) -> str:
    if args.cmdline is not None:
        return str(args.cmdline)
    raw = _read(args.cmdline_file, 64 * 1024, "command-line file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MeasureCliError(f"{args.cmdline_file}: the command line is not UTF-8") from None
    return text.removesuffix("\n")


def measure(args: argparse.Namespace, platform: PlatformProfile) -> int:
    """``image measure`` on ``platform``: print and/or write the manifest; returns 0.

    Raises MeasureCliError, MeasurementError or OSError.
    """
    kernel = _read(args.kernel, MAX_INPUT_BYTES, "kernel")
    initrd = None if args.initrd is None else _read(args.initrd, MAX_INPUT_BYTES, "initrd")
    manifest = compute_manifest(
        kernel,
        initrd,
        _cmdline(args),
        parse_memory_size(args.memory),
        platform,
        kernel_name=args.kernel.name,
        initrd_name=args.initrd.name if args.initrd else "initrd",
    )
    document = manifest.to_json()
    if args.out is not None:
        write_json(args.out, document)
    if args.json or args.out is None:
        json.dump(document, sys.stdout, indent=2, ensure_ascii=False)
        print()
    else:
        print(summary(manifest, args.out))
    return 0


def summary(manifest: Manifest, out: Path | None) -> str:
    """A few lines a person reads after ``image measure``. Raises nothing."""
    lines = [
        f"platform {manifest.platform_name} ({manifest.platform_sha384.hex()[:16]}...), "
        f"memory {format_memory_size(manifest.memory_bytes)}, "
        f"kernel header {manifest.kernel_header}",
        f"MRTD  {manifest.mrtd.hex()}",
    ]
    for number, value in enumerate(manifest.rtmrs):
        count = len(manifest.events_for(number))
        lines.append(f"RTMR{number} {value.hex()}  ({count} events)")
    for event in manifest.events:
        if event.detail:
            lines.append(f"  RTMR{event.rtmr} {event.name}: {event.detail}")
    if out is not None:
        lines.append(f"wrote the manifest to {out}")
    return "\n".join(lines)


def platform_from_args(args: argparse.Namespace) -> PlatformProfile:
    """The profile ``platform capture``/``platform add`` describe: captured from
    ``--from-quote``/``--event-log``, or read from ``--from-file`` (named ``args.name``).

    Raises MeasureCliError, MeasurementError, ServerError (a bad quote) or OSError.
    """
    if getattr(args, "from_file", None) is not None:
        profile = PlatformProfile.from_json(_read_json(args.from_file, "platform profile"))
        if profile.name != args.name:
            raise MeasureCliError(
                f"{args.from_file} holds platform {profile.name!r}, not {args.name!r}"
            )
        return profile
    if args.event_log is None:
        raise MeasureCliError("--from-quote needs --event-log (the reference boot's CCEL)")
    quote = read_quote_file(_read(args.from_quote, 1024 * 1024, "quote"))
    return capture_platform(
        args.name,
        mrtd=bytes.fromhex(quote.mrtd),
        rtmrs=[bytes.fromhex(value) for value in quote.rtmrs],
        event_log=_read(args.event_log, MAX_EVENT_LOG_BYTES, "event log"),
        firmware=None
        if args.firmware is None
        else _read(args.firmware, MAX_FIRMWARE_BYTES, "firmware"),
        memory_bytes=None if args.memory is None else parse_memory_size(args.memory),
        qemu=QemuLoader(
            kernel_header=args.kernel_header,
            acpi_data_size=QEMU_ACPI_DATA_SIZE,
            initrd_max=args.initrd_max,
        ),
    )


def describe_platform(profile: PlatformProfile) -> str:
    """One line about a profile (what ``platform capture/add`` print). Raises nothing."""
    hob = profile.td_hob
    return (
        f"platform {profile.name}: MRTD from the {profile.mrtd_source}, "
        f"{len(profile.events)} reference events, TD HOB {hob.source} "
        f"({format_memory_size(hob.memory_bytes)}), kernel header {profile.qemu.kernel_header}, "
        f"sha384 {profile.digest().hex()[:16]}..."
    )
