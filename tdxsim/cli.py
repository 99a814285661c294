"""The ``tdxsim`` command: make and drive a simulated TDX platform from the shell.

``main(argv=None)`` returns the exit status: 0 on success, 1 when the simulator refuses
(the reason is printed), 2 for a usage error. ``--verbose`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib
import json
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tdx_boot_attest.agent.command_line import run_command
from tdx_boot_attest.agent.package_info import version_line
from tdx_boot_attest.tdxsim import abi, tcb
from tdx_boot_attest.tdxsim.collateral import format_time, parse_time
from tdx_boot_attest.tdxsim.errors import ProfileError, StateError, TdxSimError
from tdx_boot_attest.tdxsim.measured_boot import Component, from_manifest
from tdx_boot_attest.tdxsim.profile import Profile
from tdx_boot_attest.tdxsim.state import DEFAULT_FMSPC, SimState

Handler = Callable[[argparse.Namespace], int]
# 128 + SIGPIPE: what the shell reports for a tool whose output reader went away.


def _hex_bytes(size: int | None) -> Callable[[str], bytes]:
    def parse(text: str) -> bytes:
        try:
            raw = bytes.fromhex(text.removeprefix("0x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not hexadecimal") from None
        if size is not None and len(raw) != size:
            raise argparse.ArgumentTypeError(
                f"expected {size} bytes ({2 * size} hex digits), got {len(raw)}"
            )
        return raw

    return parse


def _rtmr_assignment(text: str) -> tuple[int, str]:
    index, sep, value = text.partition("=")
    if not sep or index not in {"0", "1", "2", "3"}:
        raise argparse.ArgumentTypeError(f"expected N=HEX with N in 0..3, got {text!r}")
    _hex_bytes(48)(value)
    return int(index), value


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key, value


def _time(text: str) -> dt.datetime:
    try:
        return parse_time(text)
    except TdxSimError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def load_profile(spec: str | None, manifest: str | None = None) -> Profile:
    """A profile from a file path or a built-in name (``default``, ``other``), booted as
    ``manifest`` says when one is given.

    Raises ProfileError when neither exists or the file is invalid, MeasuredBootError
    when the boot cannot be computed.
    """
    profile = Profile.find(spec)
    return profile if manifest is None else profile.with_boot(from_manifest(manifest))


def _write_output(out: str, data: bytes) -> None:
    if out == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        Path(out).write_bytes(data)


# -- commands ---------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    state = SimState.init(
        args.state_dir,
        args.seed,
        fmspc=args.fmspc,
        platform_tcb=args.platform_tcb,
        validity=dt.timedelta(days=args.valid_days),
        overwrite=args.force,
    )
    print(f"initialised simulated TDX platform in {state.path}")
    print(f"  trust root:  {state.path / 'root_ca.der'}")
    expiry = format_time(state.params.next_update)
    print(f"  collateral:  {state.path / 'collateral.json'} (valid until {expiry})")
    print(f"  FMSPC {state.fmspc.hex().upper()}, platform TCB {state.platform_tcb}")
    return 0


def cmd_quote(args: argparse.Namespace) -> int:
    state = SimState.load(args.state)
    profile = load_profile(args.profile, args.manifest)
    if args.mrtd is not None:
        profile = profile.with_mrtd(args.mrtd.hex())
    for index, value in args.rtmr:
        profile = profile.with_rtmr(index, value)
    if args.tee_tcb_svn is not None:
        profile = profile.replace(tee_tcb_svn=args.tee_tcb_svn.hex())
    platform: str | tcb.PlatformTcb | None = args.platform_tcb
    if args.cpusvn is not None or args.pcesvn is not None:
        base = tcb.preset(args.platform_tcb or state.platform_tcb)
        platform = tcb.PlatformTcb(
            name="custom",
            cpusvn=args.cpusvn if args.cpusvn is not None else base.cpusvn,
            pcesvn=args.pcesvn if args.pcesvn is not None else base.pcesvn,
            tee_tcb_svn=base.tee_tcb_svn,
        )
    td15 = None if args.body is None else args.body == "1.5"
    data = state.make_quote(
        args.report_data,
        profile,
        version=args.quote_version,
        debug=args.debug,
        td15=td15,
        platform_tcb=platform,
        qe_isvsvn=args.qe_svn,
    )
    _write_output(args.out, data)
    if args.out != "-":
        print(f"wrote {len(data)}-byte TDX quote v{args.quote_version} to {args.out}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    data = Path(args.quote).read_bytes()
    if args.hex:
        data = bytes.fromhex(data.decode("ascii").strip().removeprefix("0x"))
    parsed = abi.parse_quote(data)
    out: dict[str, Any] = {
        "version": parsed.header.version,
        "tee_type": f"0x{parsed.header.tee_type:08x}",
        "tdx": parsed.is_tdx,
        "body_type": parsed.body_type,
        "size": len(data),
        "trailing_bytes": len(parsed.trailing),
    }
    if isinstance(parsed.body, abi.TdReport):
        body = parsed.body
        out |= {
            "mrtd": body.mr_td.hex(),
            **{f"rtmr{i}": r.hex() for i, r in enumerate(body.rtmrs)},
            "mrconfigid": body.mr_config_id.hex(),
            "mrowner": body.mr_owner.hex(),
            "mrownerconfig": body.mr_owner_config.hex(),
            "mrseam": body.mr_seam.hex(),
            "td_attributes": body.td_attributes.hex(),
            "debug": body.debug,
            "xfam": body.xfam.hex(),
            "tee_tcb_svn": body.tee_tcb_svn.hex(),
            "report_data": body.report_data.hex(),
        }
    else:
        out |= {
            "mrenclave": parsed.body.mr_enclave.hex(),
            "mrsigner": parsed.body.mr_signer.hex(),
            "report_data": parsed.body.report_data.hex(),
        }
    print(json.dumps(out, indent=2))
    return 0


def cmd_profile_show(args: argparse.Namespace) -> int:
    print(load_profile(args.profile).dumps(), end="")
    return 0


def _component(file: str | None, label: str | None) -> Component | None:
    if file is not None:
        return Component.file(Path(file).resolve())
    if label is not None:
        return Component.synthetic(label)
    return None


def cmd_profile_new(args: argparse.Namespace) -> int:
    base = load_profile(args.base)
    spec = base.spec
    if spec is None:
        raise ProfileError(
            f"base profile {base.name!r} names no boot components: give a profile that boots"
        )
    changes: dict[str, Any] = {}
    if args.platform is not None:
        is_file = "/" in args.platform or args.platform.endswith(".json")
        changes["platform"] = (
            Component.file(Path(args.platform).resolve())
            if is_file or Path(args.platform).exists()
            else Component.builtin(args.platform)
        )
    kernel = _component(args.kernel, args.kernel_label)
    if kernel is not None:
        changes["kernel"] = kernel
    initrd = _component(args.initrd, args.initrd_label)
    if initrd is not None or args.no_initrd:
        changes["initrd"] = initrd
    if args.cmdline is not None:
        changes["cmdline"] = args.cmdline
    if args.memory is not None:
        changes["memory"] = args.memory
    name = args.name or (Path(args.out).stem if args.out != "-" else base.name)
    profile = base.with_components(**changes).replace(name=name)
    spec = profile.spec or spec
    if args.out == "-":
        print(profile.dumps(), end="")
    else:
        profile.save(args.out)
        print(f"wrote profile {name!r} to {args.out}: {spec.describe()}")
    return 0


def _write_component(
    component: Component, data: bytes, folder: Path, fallback: str, taken: set[str]
) -> Path:
    """Write ``data`` in ``folder`` under the component's name, unless that name could
    leave the folder or is taken, then under ``fallback``."""
    name = component.name
    if not name or "/" in name or name.startswith(".") or name in taken:
        name = fallback
    taken.add(name)
    path = folder / name
    path.write_bytes(data)
    return path


def cmd_profile_inputs(args: argparse.Namespace) -> int:
    from tdx_boot_attest.tdxsim.measured_boot import component_bytes, load_platform

    profile = load_profile(args.profile)
    spec = profile.spec
    if spec is None:
        raise ProfileError(f"profile {profile.name!r} names no boot components to write")
    folder = Path(args.out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    taken = {"cmdline"}
    kernel = _write_component(
        spec.kernel, component_bytes(spec.kernel, "kernel"), folder, "vmlinuz", taken
    )
    initrd = (
        None
        if spec.initrd is None
        else _write_component(
            spec.initrd, component_bytes(spec.initrd, "initrd"), folder, "initrd.img", taken
        )
    )
    cmdline = folder / "cmdline"
    cmdline.write_text(spec.cmdline + "\n", encoding="utf-8")
    platform = load_platform(spec.platform)
    platform_file = folder / f"platform-{platform.name}.json"
    platform_file.write_text(json.dumps(platform.to_json(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote the boot inputs of profile {profile.name!r} to {folder}:")
    print(f"  kernel    {kernel}")
    print(f"  initrd    {initrd or 'none'}")
    print(f"  cmdline   {cmdline}")
    print(f"  platform  {platform_file}")
    print(f"  memory    {spec.memory}")
    measure = ["tdx-attest-server", "image", "measure", "--kernel", str(kernel)]
    if initrd is not None:
        measure += ["--initrd", str(initrd)]
    measure += ["--cmdline-file", str(cmdline), "--memory", spec.memory]
    measure += ["--platform-file", str(platform_file), "--out", "manifest.json"]
    print("measure them with:")
    print("  " + " ".join(shlex.quote(word) for word in measure))
    return 0


def cmd_eventlog(args: argparse.Namespace) -> int:
    from tdx_boot_attest.agent.eventlog import event_to_json

    profile = load_profile(args.profile, args.manifest)
    boot = profile.boot
    if boot is None:
        raise ProfileError(
            f"profile {profile.name!r} gives raw register values: no boot, so no event log"
        )
    log = boot.event_log()
    if args.out is not None:
        _write_output(args.out, log)
    if args.out == "-":
        return 0
    records = len(boot.event_log(padded=False))
    if args.json:
        document: dict[str, Any] = {
            "profile": profile.name,
            "boot": boot.to_json(),
            "event_log_bytes": len(log),
            "event_log_records_bytes": records,
            "mrtd": boot.mrtd.hex(),
            **{f"rtmr{n}": value.hex() for n, value in enumerate(boot.rtmrs)},
            "events": [event_to_json(event) for event in boot.manifest.events],
        }
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return 0
    print(f"profile {profile.name}: {boot.source.describe()}")
    print(" #  RTMR  SHA-384           event")
    for event in boot.manifest.events:
        digest = (event.sha384 or b"").hex()[:16]
        detail = f"  ({event.detail})" if event.detail else ""
        print(f"{event.index:>2}  {event.rtmr}     {digest}  {event.name}{detail}")
    print(f"MRTD   {boot.mrtd.hex()}")
    for number, value in enumerate(boot.rtmrs):
        print(f"RTMR{number}  {value.hex()}")
    where = f", written to {args.out}" if args.out is not None else ""
    print(
        f"the CCEL: {len(boot.manifest.events)} events in {records} bytes, padded to "
        f"{len(log)}{where}; its replay is RTMR0-3 above"
    )
    return 0


def cmd_platform(args: argparse.Namespace) -> int:
    state = SimState.load(args.state)
    if args.set is not None:
        state.set_platform_tcb(args.set)
    for name, preset in tcb.PRESETS.items():
        mark = "*" if name == state.platform_tcb else " "
        print(
            f"{mark} {name:13} cpusvn {preset.cpusvn.hex()} pcesvn {preset.pcesvn:3} "
            f"tee_tcb_svn {preset.tee_tcb_svn.hex()}"
        )
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    state = SimState.load(args.state)
    if args.ca is not None:
        serial = state.revoke_ca(args.ca)
        print(f"revoked {args.ca} (serial {serial:x}) on the root CA CRL")
        return 0
    if args.undo:
        state.unrevoke_pck(args.platform_tcb)
        print(f"PCK certificate of {args.platform_tcb or state.platform_tcb} is no longer revoked")
        return 0
    serial = state.revoke_pck(args.platform_tcb, serial=args.serial)
    print(f"revoked PCK certificate serial {serial:x}; collateral re-issued")
    return 0


def cmd_collateral(args: argparse.Namespace) -> int:
    state = SimState.load(args.state)
    options = (
        args.issue_date,
        args.next_update,
        args.valid_days,
        args.status,
        args.advisories,
        args.tcb_evaluation_data_number,
    )
    changing = args.reissue or any(v not in (None, []) for v in options)
    if changing:
        state.reissue_collateral(
            issue_date=args.issue_date,
            next_update=args.next_update,
            validity=dt.timedelta(days=args.valid_days) if args.valid_days is not None else None,
            statuses={k: tcb.parse_status(v) for k, v in args.status},
            advisories={k: tuple(a for a in v.split(",") if a) for k, v in args.advisories},
            tcb_evaluation_data_number=args.tcb_evaluation_data_number,
        )
    if args.out is not None:
        _write_output(args.out, state.collateral_json.encode())
    params = state.params
    window = f"{format_time(params.issue_date)} .. {format_time(params.next_update)}"
    print(
        f"collateral valid {window}, tcbEvaluationDataNumber {params.tcb_evaluation_data_number}",
        file=sys.stderr,
    )
    for level in params.tcb_levels:
        advisories = ",".join(level.advisory_ids) or "-"
        print(f"  {level.name:13} {level.status.value:34} {advisories}", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    state = SimState.load(args.state)
    print(f"state directory  {state.path}")
    print(f"seed             {state.seed}")
    print(f"root CA SHA-256  {hashlib.sha256(state.root_ca_der).hexdigest()}")
    print(f"FMSPC            {state.fmspc.hex().upper()}")
    print(f"platform TCB     {state.platform_tcb}")
    window = f"{format_time(state.params.issue_date)} .. {format_time(state.params.next_update)}"
    print(f"collateral       {window}")
    revoked = [
        f"{name} ({identity.serial:x})"
        for name, identity in state.pki.pck.items()
        if identity.serial in state.revoked_pck
    ]
    print(f"revoked PCKs     {', '.join(revoked) or 'none'}")
    return 0


# -- parser -------------------------------------------------------------------------------------


def _register_optional(subparsers: Any, module_name: str, function: str, command: str) -> None:
    """Let another module add its subcommand; a module that is absent adds nothing."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            return
        error: Exception = exc
    except ImportError as exc:
        error = exc
    else:
        getattr(module, function)(subparsers)
        return
    broken = subparsers.add_parser(command, help=f"(unavailable: {error})")
    message = f"{command} is unavailable: {error}"

    def unavailable(_args: argparse.Namespace) -> int:
        raise StateError(message)

    broken.set_defaults(func=unavailable)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tdxsim``. Raises nothing."""
    parser = argparse.ArgumentParser(prog="tdxsim", description="A simulated Intel TDX platform.")
    parser.add_argument("--verbose", "-v", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="version", version=version_line("tdxsim"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="create a simulated platform (PKI, collateral) in STATE_DIR")
    p.add_argument("state_dir", metavar="STATE_DIR")
    p.add_argument("--seed", type=int, default=0, help="seed every key derives from (default 0)")
    p.add_argument("--fmspc", type=_hex_bytes(6), default=DEFAULT_FMSPC, help="6-byte FMSPC (hex)")
    p.add_argument("--platform-tcb", default=tcb.DEFAULT_PRESET, choices=sorted(tcb.PRESETS))
    p.add_argument("--valid-days", type=int, default=45, help="collateral validity (days)")
    p.add_argument("--force", action="store_true", help="replace an existing state")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("quote", help="make a signed TDX quote")
    p.add_argument("--state", required=True, metavar="DIR")
    p.add_argument("--report-data", required=True, type=_hex_bytes(64), metavar="HEX128")
    p.add_argument("--profile", metavar="FILE|NAME", help="profile file or built-in name")
    p.add_argument("--manifest", metavar="FILE", help="boot as this measurement manifest says")
    p.add_argument("--mrtd", type=_hex_bytes(48), metavar="HEX")
    p.add_argument("--rtmr", type=_rtmr_assignment, action="append", default=[], metavar="N=HEX")
    p.add_argument("--debug", action="store_true", help="set the TD's DEBUG attribute")
    p.add_argument("--quote-version", type=int, choices=(4, 5), default=4)
    p.add_argument("--body", choices=("1.0", "1.5"), help="v5 body: TDX 1.0 or 1.5 (default 1.5)")
    p.add_argument("--platform-tcb", choices=sorted(tcb.PRESETS), help="TCB preset for this quote")
    p.add_argument("--cpusvn", type=_hex_bytes(16), metavar="HEX", help="custom CPUSVN (16 bytes)")
    p.add_argument("--pcesvn", type=int, metavar="N", help="custom PCESVN")
    p.add_argument("--tee-tcb-svn", type=_hex_bytes(16), metavar="HEX", help="TEE_TCB_SVN override")
    p.add_argument("--qe-svn", type=int, metavar="N", help="ISVSVN the quoting enclave reports")
    p.add_argument("--out", required=True, metavar="FILE", help="output file ('-' for stdout)")
    p.set_defaults(func=cmd_quote)

    p = sub.add_parser("inspect", help="print the fields of a quote file as JSON")
    p.add_argument("quote", metavar="FILE")
    p.add_argument("--hex", action="store_true", help="the file holds hex text")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("profile", help="measurement profiles (what a simulated TD boots)")
    psub = p.add_subparsers(dest="profile_command", required=True, metavar="ACTION")
    q = psub.add_parser("show", help="print a profile (file or built-in name)")
    q.add_argument("profile", nargs="?", default="default", metavar="FILE|NAME")
    q.set_defaults(func=cmd_profile_show)
    q = psub.add_parser(
        "new", help="make a profile that boots other components than a base profile"
    )
    q.add_argument("--base", metavar="FILE|NAME", help="profile to start from (default)")
    q.add_argument("--name", help="the new profile's name (default: the output file's stem)")
    q.add_argument("--platform", metavar="NAME|FILE", help="built-in platform or profile file")
    group = q.add_mutually_exclusive_group()
    group.add_argument("--kernel", metavar="FILE", help="a bzImage file")
    group.add_argument("--kernel-label", metavar="TEXT", help="a synthetic kernel")
    group = q.add_mutually_exclusive_group()
    group.add_argument("--initrd", metavar="FILE", help="an initrd file")
    group.add_argument("--initrd-label", metavar="TEXT", help="a synthetic initrd")
    group.add_argument("--no-initrd", action="store_true", help="boot without an initrd")
    q.add_argument("--cmdline", metavar="TEXT", help="the kernel command line (QEMU -append)")
    q.add_argument("--memory", metavar="SIZE", help="the TD's memory (2G, 1536M)")
    q.add_argument("--out", required=True, metavar="FILE", help="output file ('-' for stdout)")
    q.set_defaults(func=cmd_profile_new)
    q = psub.add_parser(
        "inputs",
        help="write a profile's kernel, initrd, command line and platform profile as files",
    )
    q.add_argument("profile", nargs="?", default="default", metavar="FILE|NAME")
    q.add_argument("--out-dir", required=True, metavar="DIR")
    q.set_defaults(func=cmd_profile_inputs)

    p = sub.add_parser(
        "eventlog", help="the firmware event log (CCEL) of a profile's boot: list or write it"
    )
    p.add_argument("--profile", metavar="FILE|NAME", help="profile file or built-in name")
    p.add_argument("--manifest", metavar="FILE", help="boot as this measurement manifest says")
    p.add_argument("--out", metavar="FILE", help="write the padded CCEL here ('-' for stdout)")
    p.add_argument("--json", action="store_true", help="print the events and registers as JSON")
    p.set_defaults(func=cmd_eventlog)

    p = sub.add_parser("platform", help="show or set the platform TCB preset")
    p.add_argument("--state", required=True, metavar="DIR")
    p.add_argument("--set", choices=sorted(tcb.PRESETS), metavar="PRESET")
    p.set_defaults(func=cmd_platform)

    p = sub.add_parser("revoke", help="revoke a PCK certificate (or an intermediate CA)")
    p.add_argument("--state", required=True, metavar="DIR")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--platform-tcb", choices=sorted(tcb.PRESETS), help="PCK leaf of this preset"
    )
    group.add_argument("--serial", type=lambda s: int(s, 16), metavar="HEX")
    group.add_argument("--ca", choices=("pck_platform_ca", "tcb_signing"))
    p.add_argument("--undo", action="store_true", help="take the PCK leaf off the CRL")
    p.set_defaults(func=cmd_revoke)

    p = sub.add_parser("collateral", help="show, re-issue or export the collateral")
    p.add_argument("--state", required=True, metavar="DIR")
    p.add_argument("--issue-date", type=_time, metavar="ISO8601")
    p.add_argument("--next-update", type=_time, metavar="ISO8601")
    p.add_argument("--valid-days", type=int, metavar="N")
    p.add_argument("--status", type=_key_value, action="append", default=[], metavar="LEVEL=STATUS")
    p.add_argument(
        "--advisories", type=_key_value, action="append", default=[], metavar="LEVEL=ID,ID"
    )
    p.add_argument("--tcb-evaluation-data-number", type=int, metavar="N")
    p.add_argument("--reissue", action="store_true", help="re-sign with fresh dates")
    p.add_argument("--out", metavar="FILE", help="write QuoteCollateralV3 JSON ('-' for stdout)")
    p.set_defaults(func=cmd_collateral)

    p = sub.add_parser("show", help="summarise a state directory")
    p.add_argument("--state", required=True, metavar="DIR")
    p.set_defaults(func=cmd_show)

    _register_optional(sub, "tdx_boot_attest.tdxsim.tsm.fuse", "add_mount_parser", "mount")
    _register_optional(sub, "tdx_boot_attest.tdxsim.pcs", "add_pcs_parser", "pcs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tdxsim`` with ``argv``; returns the exit status (never raises for user errors;
    141 when the reader of standard output went away)."""
    return run_command(lambda: _main(argv))


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.func
    try:
        return handler(args)
    except BrokenPipeError:
        raise  # main() ends quietly: the reader of standard output went away
    except TdxSimError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"tdxsim: error: {exc.reason}: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        if args.verbose:
            traceback.print_exc()
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"tdxsim: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
