"""A FUSE mount that behaves like /sys/kernel/config/tsm, for any program to use.

``tdxsim mount --state DIR [--profile FILE] MOUNTPOINT`` serves ``MOUNTPOINT/report/``
as the kernel's configfs-tsm report group with the tdx_guest provider (see
:mod:`tdxsim.tsm.model` for the ABI), backed by the simulator's quotes, and the firmware
event log of the profile's boot as ``MOUNTPOINT/.tdxsim-ccel`` (see
:mod:`tdxsim.tsm.device`). It runs in the foreground, multithreaded, until SIGTERM or
SIGINT, then unmounts.

Faults are armed with ``--fault SPEC`` flags at start, or at run time by writing spec
lines (see :mod:`tdxsim.tsm.faults`) to the control file ``MOUNTPOINT/.tdxsim-faults``;
reading that file shows what is pending. Neither the control file nor the event log is
listed by readdir, so ``ls -a MOUNTPOINT`` shows only ``report`` as on a real guest.

Binary writes are committed when the file is flushed (at close(2)): FUSE sends the
release message after close(2) has returned, while configfs commits before it returns.
"""

from __future__ import annotations

import argparse
import errno
import itertools
import logging
import os
import stat
import threading
import time
from typing import TYPE_CHECKING, Any

import mfusepy

from tdx_boot_attest.tdxsim.tsm.configfs import AttrFile, ConfigfsView
from tdx_boot_attest.tdxsim.tsm.device import EVENT_LOG_FILE, EVENT_LOG_MODE, simulated_td
from tdx_boot_attest.tdxsim.tsm.errors import TsmError
from tdx_boot_attest.tdxsim.tsm.faults import FaultPlan, FaultSpecError
from tdx_boot_attest.tdxsim.tsm.model import KernelAbi, TsmModel

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger(__name__)

CONTROL_FILE = ".tdxsim-faults"
_LOOP_ENDED = (7, 8)


class _ControlFile:
    """An open handle of the control file: reads show the plan, writes arm faults."""

    def __init__(self, faults: FaultPlan) -> None:
        self._faults = faults
        self._text = faults.describe().encode()

    def read(self, size: int, offset: int) -> bytes:
        return self._text[offset : offset + size]

    def write(self, data: bytes, offset: int) -> int:
        del offset
        try:
            self._faults.apply_text(data.decode("utf-8"))
        except (FaultSpecError, UnicodeDecodeError) as exc:
            log.warning("refused fault spec: %s", exc)
            raise TsmError(errno.EINVAL, str(exc)) from None
        return len(data)

    def commit(self) -> None:
        return None

    def release(self) -> None:
        return None


class _EventLogFile:
    """An open handle of the event log: read-only bytes fixed at mount time."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self, size: int, offset: int) -> bytes:
        return self._data[offset : offset + size]

    def write(self, data: bytes, offset: int) -> int:
        del data, offset
        raise TsmError(errno.EBADF, "the event log is open read-only")

    def commit(self) -> None:
        return None

    def release(self) -> None:
        return None


class TsmFuseOperations(mfusepy.Operations):  # type: ignore[misc]
    """mfusepy operations serving a :class:`ConfigfsView`, the fault control file and
    (when the TD has one) the firmware event log."""

    use_ns = True

    def __init__(self, view: ConfigfsView, event_log: bytes | None = None) -> None:
        self.view = view
        self.faults = view.model.faults
        self.event_log = event_log
        self._handles: dict[int, AttrFile | _ControlFile | _EventLogFile] = {}
        self._next_fh = itertools.count(1)
        self._lock = threading.Lock()
        self._mounted_ns = time.time_ns()
        self._uid = os.getuid()
        self._gid = os.getgid()

    # -- mount configuration ----------------------------------------------------------------
    def init_with_config(self, conn: Any, config: Any) -> None:
        """Disable every kernel cache: each read and lookup must reach the model."""
        del conn
        if config is not None:
            config.direct_io = 1
            config.entry_timeout = 0.0
            config.attr_timeout = 0.0
            config.negative_timeout = 0.0
            config.hard_remove = 1

    # -- metadata ---------------------------------------------------------------------------
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        """stat(2) of a path; raises TsmError(ENOENT) when absent."""
        del fh
        if path == "/" + CONTROL_FILE:
            return self._stat(stat.S_IFREG | 0o600, 0)
        if path == "/" + EVENT_LOG_FILE and self.event_log is not None:
            return self._stat(stat.S_IFREG | EVENT_LOG_MODE, len(self.event_log))
        node = self.view.lookup(_parts(path))
        if node.is_dir:
            return self._stat(stat.S_IFDIR | node.mode, 0, nlink=2)
        return self._stat(stat.S_IFREG | node.mode, node.size)

    def readdir(self, path: str, fh: int) -> list[str]:
        """Directory listing (the control file and the event log are deliberately absent)."""
        del fh
        return [".", "..", *self.view.listdir(_parts(path))]

    def access(self, path: str, amode: int) -> int:
        """Existence check only: permissions are enforced at open, like configfs."""
        del amode
        self.getattr(path)
        return 0

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        """O_TRUNC and truncate(2) succeed and change nothing, as configfs_setattr does."""
        del length, fh
        self.getattr(path)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        """touch(1) on an attribute succeeds without effect."""
        del times
        self.getattr(path)
        return 0

    # -- directories ------------------------------------------------------------------------
    def mkdir(self, path: str, mode: int) -> int:
        """mkdir(2): only below report/; raises TsmError (EPERM, EEXIST, ENXIO)."""
        del mode
        self.view.mkdir(_parts(path))
        return 0

    def rmdir(self, path: str) -> int:
        """rmdir(2) of a report entry; raises TsmError (EPERM, ENOENT, ENOTDIR)."""
        self.view.rmdir(_parts(path))
        return 0

    def unlink(self, path: str) -> int:
        """configfs attributes cannot be removed: raises TsmError(EPERM)."""
        self.view.unlink(_parts(path))
        return 0

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        """configfs has no file creation: raises TsmError(EACCES)."""
        del mode, fi
        self.view.create(_parts(path))
        return 0

    # -- files ------------------------------------------------------------------------------
    def open(self, path: str, flags: int) -> int:
        """open(2) of an attribute, the control file or the event log; raises TsmError
        (EACCES, EISDIR, ENOENT)."""
        handle: AttrFile | _ControlFile | _EventLogFile
        if path == "/" + CONTROL_FILE:
            handle = _ControlFile(self.faults)
        elif path == "/" + EVENT_LOG_FILE and self.event_log is not None:
            if flags & os.O_ACCMODE != os.O_RDONLY:
                raise TsmError(errno.EACCES, "the event log is read-only")
            handle = _EventLogFile(self.event_log)
        else:
            handle = self.view.open(_parts(path), flags)
        with self._lock:
            fh = next(self._next_fh)
            self._handles[fh] = handle
        return fh

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        """read(2); raises TsmError with the kernel's errno (EINVAL, ENXIO, EIO, ...)."""
        del path
        return self._handle(fh).read(size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        """write(2); raises TsmError (EFBIG, EINVAL, ...)."""
        del path
        return self._handle(fh).write(data, offset)

    def flush(self, path: str, fh: int) -> int:
        """close(2) of one descriptor: commit buffered binary writes now."""
        del path
        self._handle(fh).commit()
        return 0

    def release(self, path: str, fh: int) -> int:
        """Last close of the open file."""
        del path
        with self._lock:
            handle = self._handles.pop(fh, None)
        if handle is not None:
            handle.release()
        return 0

    # -- helpers ----------------------------------------------------------------------------
    def _handle(self, fh: int) -> AttrFile | _ControlFile | _EventLogFile:
        with self._lock:
            handle = self._handles.get(fh)
        if handle is None:
            raise TsmError(errno.EBADF, f"unknown file handle {fh}")
        return handle

    def _stat(self, mode: int, size: int, nlink: int = 1) -> dict[str, Any]:
        return {
            "st_mode": mode,
            "st_nlink": nlink,
            "st_size": size,
            "st_uid": self._uid,
            "st_gid": self._gid,
            "st_atime": self._mounted_ns,
            "st_mtime": self._mounted_ns,
            "st_ctime": self._mounted_ns,
        }


def _parts(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


def serve(
    model: TsmModel, mountpoint: str, *, event_log: bytes | None = None, debug: bool = False
) -> None:
    """Mount ``model`` (and ``event_log``, when given) at ``mountpoint`` and serve until
    SIGTERM/SIGINT, then unmount.

    Raises RuntimeError when libfuse cannot mount (no /dev/fuse, mountpoint busy, ...).
    """
    operations = TsmFuseOperations(ConfigfsView(model), event_log)
    try:
        mfusepy.FUSE(
            operations,
            mountpoint,
            foreground=True,
            nothreads=False,
            debug=debug,
            fsname="tdxsim-tsm",
            subtype="tdxsim",
        )
    except RuntimeError as exc:
        # fuse_main_real() reports 7/8 when its loop ends, which includes the normal end
        # by SIGTERM/SIGINT (libfuse records the signal as the loop's error). The file
        # system is unmounted by then; every other code means it never got mounted.
        if exc.args and exc.args[0] in _LOOP_ENDED:
            log.debug("FUSE loop ended (%s); unmounted", exc.args[0])
            return
        raise


def _fault_spec(text: str) -> str:
    try:
        FaultPlan().apply(text)
    except FaultSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_mount_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``mount`` subcommand (set_defaults(func=run)). Raises nothing."""
    parser = subparsers.add_parser(
        "mount",
        help="serve a simulated /sys/kernel/config/tsm at MOUNTPOINT (FUSE, foreground)",
        description=(
            "Mount a configfs-tsm look-alike: MOUNTPOINT/report/ behaves like "
            "/sys/kernel/config/tsm/report/ on a TDX guest, and MOUNTPOINT/"
            f"{EVENT_LOG_FILE} holds the firmware event log (CCEL) of the profile's boot. "
            "Runs until SIGTERM/SIGINT. "
            f"Faults: --fault SPEC, or write SPEC lines to MOUNTPOINT/{CONTROL_FILE}."
        ),
    )
    parser.add_argument("--state", required=True, help="simulator state directory")
    parser.add_argument(
        "--profile", help="measurement profile: a JSON file or a built-in name (default: default)"
    )
    parser.add_argument(
        "--manifest",
        metavar="FILE",
        help="boot as this measurement manifest says (MRTD, RTMRs, event log), instead of "
        "the profile's boot",
    )
    parser.add_argument(
        "--abi",
        choices=[abi.value for abi in KernelAbi],
        default=KernelAbi.V6_10.value,
        help="kernel attribute layout to show (default 6.10: current kernels)",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        type=_fault_spec,
        metavar="SPEC",
        help="arm a fault at start: outblob=EIO*2, race*1, delay=1.5, provider=none|NAME",
    )
    parser.add_argument(
        "--quote-version", type=int, choices=[4, 5], default=4, help="quote format (default 4)"
    )
    parser.add_argument("--debug-td", action="store_true", help="quote a TD with DEBUG set")
    parser.add_argument("--fuse-debug", action="store_true", help="libfuse debug output")
    parser.add_argument("mountpoint", help="an empty directory to mount on")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``tdxsim mount``; returns the exit status. Raises on a bad state dir,
    profile or manifest."""
    from tdx_boot_attest.tdxsim.measured_boot import from_manifest
    from tdx_boot_attest.tdxsim.profile import Profile

    faults = FaultPlan()
    for spec in args.fault:
        faults.apply(spec)
    profile = Profile.find(args.profile)
    if args.manifest is not None:
        profile = profile.with_boot(from_manifest(args.manifest))
    td = simulated_td(args.state, profile, version=args.quote_version, debug=args.debug_td)
    model = TsmModel(td.quote_fn, abi=KernelAbi(args.abi), faults=faults)
    if not os.path.isdir(args.mountpoint):
        raise TsmError(errno.ENOTDIR, f"mountpoint {args.mountpoint} is not a directory")
    serve(model, args.mountpoint, event_log=td.event_log, debug=args.fuse_debug)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tdxsim.tsm.fuse mount ...``: the same command without the full CLI."""
    parser = argparse.ArgumentParser(prog="tdxsim")
    subparsers = parser.add_subparsers(required=True)
    add_mount_parser(subparsers)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
