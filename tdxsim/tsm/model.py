"""The configfs-tsm report interface as a pure, thread-safe state machine.

This follows Linux ``drivers/virt/coco/guest/report.c`` (v6.10 and later, the layout of
current kernels) with the ``tdx_guest`` provider of ``drivers/virt/coco/tdx-guest``; the
v6.7-v6.9 layout (every attribute visible, no per-provider visibility) is available as
:attr:`KernelAbi.V6_7`. Behaviour reproduced:

* ``mkdir report/NAME`` fails with ENXIO while no provider is registered.
* ``generation`` counts every accepted write to a writable attribute (64-bit, wrapping);
  a write is refused with EBUSY when it would make the write generation catch up with
  the read generation (only reachable after 2**64-1 unread writes).
* ``outblob`` is served from the cached report while the generation has not moved since
  it was produced; otherwise the provider makes a new one. Reads fail with EINVAL while
  no inblob was written (or an empty one), with ENXIO when no provider is registered and
  no cached report is current, and with whatever the provider returns (EINVAL unless
  inblob is exactly 64 bytes for tdx_guest; EBUSY, EIO, ETIMEDOUT, EINTR from GetQuote).
* ``auxblob`` (v6.7 layout) triggers the same generation and is empty for tdx_guest.

File-level behaviour (buffering until close, EFBIG, per-open caching) lives in
:mod:`tdxsim.tsm.configfs`; faults come from :class:`tdxsim.tsm.faults.FaultPlan`.
"""

from __future__ import annotations

import enum
import errno
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tdx_boot_attest.tdxsim.tsm.errors import TsmError
from tdx_boot_attest.tdxsim.tsm.faults import FaultPlan

log = logging.getLogger(__name__)

QuoteFn = Callable[[bytes], bytes]

INBLOB_MAX = 64  # TSM_REPORT_INBLOB_MAX
OUTBLOB_MAX = 32 * 1024  # TSM_REPORT_OUTBLOB_MAX
PRIVLEVEL_MAX = 3  # TSM_REPORT_PRIVLEVEL_MAX
TDX_REPORTDATA_LEN = 64
_GENERATION_MASK = (1 << 64) - 1  # unsigned long on 64-bit kernels


class KernelAbi(enum.StrEnum):
    """Which kernel's attribute set a report entry shows."""

    V6_7 = "6.7"  # v6.7-v6.9: all attributes visible for every provider
    V6_10 = "6.10"  # v6.10+: tdx_guest shows generation, provider, inblob, outblob only


class AttrKind(enum.Enum):
    """configfs attribute flavour: text (show/store per call) or binary (buffered)."""

    TEXT = "text"
    BINARY = "binary"


@dataclass(frozen=True, slots=True)
class Attribute:
    """One file of a report entry."""

    name: str
    kind: AttrKind
    readable: bool

    @property
    def mode(self) -> int:
        """Permission bits as configfs creates them (RO 0444, WO 0200)."""
        return 0o444 if self.readable else 0o200


GENERATION = Attribute("generation", AttrKind.TEXT, readable=True)
PROVIDER = Attribute("provider", AttrKind.TEXT, readable=True)
PRIVLEVEL = Attribute("privlevel", AttrKind.TEXT, readable=False)
PRIVLEVEL_FLOOR = Attribute("privlevel_floor", AttrKind.TEXT, readable=True)
INBLOB = Attribute("inblob", AttrKind.BINARY, readable=False)
OUTBLOB = Attribute("outblob", AttrKind.BINARY, readable=True)
AUXBLOB = Attribute("auxblob", AttrKind.BINARY, readable=True)

ATTRIBUTES: dict[KernelAbi, tuple[Attribute, ...]] = {
    KernelAbi.V6_10: (GENERATION, PROVIDER, INBLOB, OUTBLOB),
    KernelAbi.V6_7: (GENERATION, PROVIDER, PRIVLEVEL, PRIVLEVEL_FLOOR, INBLOB, OUTBLOB, AUXBLOB),
}


@dataclass(eq=False)
class ReportEntry:
    """State of one ``report/NAME`` directory (struct tsm_report_state)."""

    name: str
    attributes: tuple[Attribute, ...]
    write_generation: int = 0
    read_generation: int = 0
    inblob: bytes = b""
    privlevel: int = 0
    outblob: bytes | None = None
    auxblob: bytes | None = None
    alive: bool = True

    def attribute(self, name: str) -> Attribute | None:
        """The attribute called ``name`` if this entry shows it. Raises nothing."""
        for attr in self.attributes:
            if attr.name == name:
                return attr
        return None


class TsmModel:
    """The report group of configfs-tsm with one TSM provider behind ``quote_fn``.

    ``quote_fn(report_data)`` is the hardware: it gets the 64 inblob bytes and returns a
    quote. Every method raises :class:`TsmError` carrying the errno the kernel returns.
    """

    def __init__(
        self,
        quote_fn: QuoteFn,
        *,
        abi: KernelAbi = KernelAbi.V6_10,
        faults: FaultPlan | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._quote_fn = quote_fn
        self.abi = abi
        self.faults = faults if faults is not None else FaultPlan()
        self._sleep = sleep
        # One lock plays tsm_rwsem: report generation holds it, like the kernel's write lock.
        self._lock = threading.RLock()
        self._entries: dict[str, ReportEntry] = {}

    # -- the report group -----------------------------------------------------------------
    def names(self) -> list[str]:
        """Names of the current entries, in creation order. Raises nothing."""
        with self._lock:
            return list(self._entries)

    def entry(self, name: str) -> ReportEntry:
        """The live entry called ``name``; raises TsmError(ENOENT)."""
        with self._lock:
            found = self._entries.get(name)
        if found is None:
            raise TsmError(errno.ENOENT, f"no report entry {name!r}")
        return found

    def mkdir(self, name: str) -> ReportEntry:
        """Create ``report/NAME``; raises TsmError(ENXIO without provider, EEXIST, EINVAL)."""
        if not name or "/" in name or name in {".", ".."} or "\0" in name:
            raise TsmError(errno.EINVAL, f"bad entry name {name!r}")
        with self._lock:
            if name in self._entries:
                raise TsmError(errno.EEXIST, f"report entry {name!r} exists")
            if self.faults.provider is None:
                raise TsmError(errno.ENXIO, "no TSM provider registered")
            created = ReportEntry(name=name, attributes=ATTRIBUTES[self.abi])
            self._entries[name] = created
            return created

    def rmdir(self, name: str) -> None:
        """Remove ``report/NAME``; open files of it then fail with ENOENT. Raises TsmError."""
        with self._lock:
            removed = self._entries.pop(name, None)
            if removed is None:
                raise TsmError(errno.ENOENT, f"no report entry {name!r}")
            removed.alive = False

    # -- text attributes ------------------------------------------------------------------
    def show(self, entry: ReportEntry, attr: str) -> bytes:
        """Contents of a readable text attribute; raises TsmError (ENXIO, ENOENT, EACCES)."""
        with self._lock:
            self._check_alive(entry)
            provider = self.faults.provider
            if attr == GENERATION.name:
                return f"{entry.write_generation}\n".encode()
            if attr == PROVIDER.name:
                if provider is None:
                    raise TsmError(errno.ENXIO, "no TSM provider registered")
                return f"{provider}\n".encode()
            if attr == PRIVLEVEL_FLOOR.name:
                if provider is None:
                    raise TsmError(errno.ENXIO, "no TSM provider registered")
                return b"0\n"  # tdx_guest leaves privlevel_floor at 0
        raise TsmError(errno.EACCES, f"{attr} is not a readable text attribute")

    def store(self, entry: ReportEntry, attr: str, data: bytes) -> int:
        """Write a text attribute (privlevel); returns bytes consumed. Raises TsmError."""
        if attr != PRIVLEVEL.name:
            raise TsmError(errno.EACCES, f"{attr} is not a writable text attribute")
        value = _kstrtouint(data)
        with self._lock:
            self._check_alive(entry)
            if self.faults.provider is None:
                raise TsmError(errno.ENXIO, "no TSM provider registered")
            if value > PRIVLEVEL_MAX:
                raise TsmError(errno.EINVAL, f"privlevel {value} above {PRIVLEVEL_MAX}")
            self._advance_write_generation(entry)
            entry.privlevel = value
        return len(data)

    # -- binary attributes ----------------------------------------------------------------
    def write_blob(self, entry: ReportEntry, attr: str, data: bytes) -> None:
        """Commit a binary write (what configfs does at close); raises TsmError (EBUSY)."""
        if attr != INBLOB.name:
            raise TsmError(errno.EACCES, f"{attr} is not a writable binary attribute")
        if len(data) > INBLOB_MAX:
            raise TsmError(errno.EFBIG, f"inblob holds at most {INBLOB_MAX} bytes")
        with self._lock:
            self._check_alive(entry)
            self._advance_write_generation(entry)
            entry.inblob = bytes(data)

    def read_blob(self, entry: ReportEntry, attr: str) -> bytes:
        """Contents of outblob/auxblob, regenerating when stale; raises TsmError."""
        if attr not in {OUTBLOB.name, AUXBLOB.name}:
            raise TsmError(errno.EACCES, f"{attr} is not a readable binary attribute")
        if self.faults.take_race():
            self._race_writer(entry)
        with self._lock:
            self._check_alive(entry)
            if not entry.inblob:
                raise TsmError(errno.EINVAL, "inblob was not written")
            if entry.outblob is None or entry.read_generation != entry.write_generation:
                if self.faults.provider is None:
                    raise TsmError(errno.ENXIO, "no TSM provider registered")
                entry.outblob = None
                entry.auxblob = None
                entry.outblob = self._report_new(entry)
                entry.auxblob = b""  # tdx_guest does not fill auxblob
                entry.read_generation = entry.write_generation
            blob = entry.outblob if attr == OUTBLOB.name else entry.auxblob
            return blob if blob is not None else b""

    # -- internals ------------------------------------------------------------------------
    def _report_new(self, entry: ReportEntry) -> bytes:
        """tdx_report_new(): one GetQuote for the entry's inblob (lock held)."""
        if len(entry.inblob) != TDX_REPORTDATA_LEN:
            raise TsmError(
                errno.EINVAL,
                f"tdx_guest needs {TDX_REPORTDATA_LEN} inblob bytes, got {len(entry.inblob)}",
            )
        delay = self.faults.delay_seconds
        if delay:
            self._sleep(delay)
        injected = self.faults.take_report_error()
        if injected is not None:
            raise TsmError(injected, "GetQuote failed (injected fault)")
        try:
            quote = self._quote_fn(entry.inblob)
        except Exception:
            log.exception("quote function failed")
            raise TsmError(errno.EIO, "GetQuote failed") from None
        return bytes(quote)

    def _race_writer(self, entry: ReportEntry) -> None:
        """Another process writes inblob of the same entry (different bytes)."""
        with self._lock:
            if not entry.alive:
                return
            other = bytes(b ^ 0xFF for b in entry.inblob.ljust(TDX_REPORTDATA_LEN, b"\0"))
            self._advance_write_generation(entry)
            entry.inblob = other

    @staticmethod
    def _advance_write_generation(entry: ReportEntry) -> None:
        if entry.write_generation == (entry.read_generation - 1) & _GENERATION_MASK:
            raise TsmError(errno.EBUSY, "report configuration must be read before more writes")
        entry.write_generation = (entry.write_generation + 1) & _GENERATION_MASK

    @staticmethod
    def _check_alive(entry: ReportEntry) -> None:
        if not entry.alive:
            raise TsmError(errno.ENOENT, f"report entry {entry.name!r} was removed")


def _kstrtouint(data: bytes) -> int:
    """Parse like the kernel's kstrtouint(buf, 0): one trailing newline, 0x/0 prefixes."""
    text = data.decode("ascii", errors="replace")
    if text.endswith("\n"):
        text = text[:-1]
    text = text.removeprefix("+")
    base = 10
    if text[:2].lower() == "0x":
        text, base = text[2:], 16
    elif len(text) > 1 and text.startswith("0"):
        text, base = text[1:], 8
    digits = "0123456789abcdef"[:base]
    if not text or any(ch not in digits for ch in text.lower()):
        raise TsmError(errno.EINVAL, "not an unsigned integer")
    value = int(text, base)
    if value > 0xFFFFFFFF:
        raise TsmError(errno.ERANGE, "value does not fit in 32 bits")
    return value
