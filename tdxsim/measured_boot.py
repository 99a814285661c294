"""Measured boot of a simulated TD: what TDX firmware would measure for a given boot.

A simulated TD "boots" a kernel, an initrd and a command line with some memory on a
platform, exactly as QEMU's direct boot (``-kernel/-initrd/-append/-m``) with TDVF on that
host. Its measurements come from the project's measurement calculator
(:func:`agent.measurement.manifest.compute_manifest`): MRTD (the platform's), RTMR0-3
and the event list TDVF and the Linux EFI stub write, with the same event types and
order as the real QEMU direct-boot logs. The event list encodes as a CCEL log
(:meth:`SimulatedBoot.event_log`), padded like a firmware log area, whose replay is
exactly the RTMRs.

What a boot is made of (:class:`BootSpec`):

* ``platform``: a platform profile (``tdx-boot-attest/platform-profile``), built-in by
  name (:data:`DEFAULT_PLATFORM` = ``qemu-tdvf``, in ``tdxsim/platforms/``) or a file
  captured with ``tdx-attest-server platform capture``;
* ``kernel`` and ``initrd`` (optional): a real file, or a **synthetic** input built from
  a label (:mod:`tdxsim.synthetic`), so an image can be named without shipping a kernel;
* ``cmdline``: the text QEMU's ``-append`` gets;
* ``memory``: the TD's memory size, ``qemu -m`` style (``2G``).

A boot can also be taken as it is from a measurement manifest that the calculator wrote
(``tdx-attest-server image measure``), for a TD whose inputs are elsewhere: the QEMU boot
tests compute it on the host for what QEMU loads and hand it to the simulator in the guest.

The built-in ``qemu-tdvf`` platform is ``capture_platform`` of the real QEMU direct-boot
log ``tests/assets/eventlog/qemu-direct-boot-initrd.ccel`` (TDVF, 2 GiB, from
confidential-containers/trustee) with the simulator's own MRTD (:data:`SIMULATED_MRTD`)
in place of the quote's, which that log did not come with; the RTMRs given to the
capture are the log's own replay. tests/tdxsim/test_measured_boot.py checks that the
shipped file is exactly what that capture gives. Being captured at 2 GiB, it serves
memory sizes below 2.75 GiB (the ACPI tables it keeps hold for those).

File reading is the only I/O here, with size limits; everything else is pure.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Final

from tdx_boot_attest.agent.eventlog import encode_event_log
from tdx_boot_attest.agent.measurement.errors import MeasurementError
from tdx_boot_attest.agent.measurement.manifest import Manifest, compute_manifest
from tdx_boot_attest.agent.measurement.memory import format_memory_size, parse_memory_size
from tdx_boot_attest.agent.measurement.platform import PlatformProfile
from tdx_boot_attest.tdxsim.errors import MeasuredBootError, ProfileError
from tdx_boot_attest.tdxsim.synthetic import synthetic_initrd, synthetic_kernel

SIMULATED_MRTD: Final = bytes.fromhex(
    "fe373baf04280a2702fb46d0e73e4cf129b0525e0f4d09f68b737549ff96eceb"
    "528c8c32a57d89bc5788e4cbca0fad75"
)
DEFAULT_PLATFORM: Final = "qemu-tdvf"
# TDVF reserves 64 KiB for the log (the real QEMU log above is that size, 0xFF-padded).
CCEL_AREA_BYTES: Final = 64 * 1024
CCEL_PAD_BYTE: Final = 0xFF
MAX_INPUT_BYTES: Final = 1024 * 1024 * 1024
MAX_JSON_BYTES: Final = 16 * 1024 * 1024
MAX_CMDLINE_CHARS: Final = 64 * 1024

SYNTHETIC: Final = "synthetic"
FILE: Final = "file"
BUILTIN: Final = "builtin"

Reader = Callable[[Path, int], bytes]


def read_file(path: Path, limit: int) -> bytes:
    """The bytes of ``path``; raises MeasuredBootError when unreadable or over ``limit``."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise MeasuredBootError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise MeasuredBootError(f"{path} is larger than the {limit} bytes allowed")
    return data


@dataclass(frozen=True, slots=True)
class Component:
    """Where one boot input comes from: ``synthetic`` (a label), ``file`` (a path) or, for
    the platform only, ``builtin`` (a platform shipped with tdxsim)."""

    kind: str
    value: str

    @classmethod
    def synthetic(cls, label: str) -> Component:
        """A synthetic kernel or initrd built from ``label``. Raises nothing."""
        return cls(SYNTHETIC, label)

    @classmethod
    def file(cls, path: str | Path) -> Component:
        """A real file (a relative path is resolved when the boot is computed). Raises nothing."""
        return cls(FILE, str(path))

    @classmethod
    def builtin(cls, name: str) -> Component:
        """A platform shipped with tdxsim (``qemu-tdvf``). Raises nothing."""
        return cls(BUILTIN, name)

    @property
    def name(self) -> str:
        """What manifests call the input: the label, or the file's name. Raises nothing."""
        return Path(self.value).name if self.kind == FILE else self.value

    def describe(self) -> str:
        """``vmlinuz-6.1 (synthetic)``, ``/boot/vmlinuz (file)``. Raises nothing."""
        return f"{self.value} ({self.kind})"

    def resolved(self, base: Path | None) -> Component:
        """A file component's path made absolute against ``base``. Raises nothing."""
        if self.kind != FILE or base is None or Path(self.value).is_absolute():
            return self
        return Component(FILE, str((base / self.value).resolve()))

    def to_json(self) -> Any:
        """``{"synthetic": label}``, ``{"file": path}``, or the platform's name. Raises nothing."""
        return self.value if self.kind == BUILTIN else {self.kind: self.value}

    @classmethod
    def from_json(cls, value: Any, what: str, *, platform: bool = False) -> Component:
        """Read the JSON form; raises ProfileError naming ``what``."""
        if platform and isinstance(value, str):
            return cls.builtin(value)
        kinds = (FILE,) if platform else (SYNTHETIC, FILE)
        if (
            isinstance(value, dict)
            and len(value) == 1
            and next(iter(value)) in kinds
            and isinstance(next(iter(value.values())), str)
            and next(iter(value.values()))
        ):
            kind, text = next(iter(value.items()))
            return cls(kind, text)
        shapes = " or ".join(f'{{"{kind}": "..."}}' for kind in kinds)
        prefix = "a built-in name, " if platform else ""
        raise ProfileError(f"boot.{what} must be {prefix}{shapes}")


@dataclass(frozen=True, slots=True)
class BootSpec:
    """The named components of a simulated boot (see the module docstring)."""

    platform: Component
    kernel: Component
    initrd: Component | None
    cmdline: str
    memory: str

    def __post_init__(self) -> None:
        if self.kernel.kind not in (SYNTHETIC, FILE):
            raise ProfileError("the kernel is a synthetic label or a file")
        if self.initrd is not None and self.initrd.kind not in (SYNTHETIC, FILE):
            raise ProfileError("the initrd is a synthetic label or a file")
        if self.platform.kind not in (BUILTIN, FILE):
            raise ProfileError("the platform is a built-in name or a file")
        if not isinstance(self.cmdline, str) or len(self.cmdline) > MAX_CMDLINE_CHARS:
            raise ProfileError(f"the command line is text of at most {MAX_CMDLINE_CHARS} chars")
        if "\x00" in self.cmdline:
            raise ProfileError("the command line cannot hold a NUL character")
        if not isinstance(self.memory, str):
            raise ProfileError('the memory size is text such as "2G"')
        try:
            normal = format_memory_size(parse_memory_size(self.memory))
        except MeasurementError as exc:
            raise ProfileError(f"boot.memory: {exc}") from None
        object.__setattr__(self, "memory", normal)

    @property
    def memory_bytes(self) -> int:
        """The memory size in bytes. Raises nothing (checked on creation)."""
        return parse_memory_size(self.memory)

    def resolved(self, base: Path | None) -> BootSpec:
        """The spec with relative file paths made absolute against ``base``. Raises nothing."""
        return BootSpec(
            platform=self.platform.resolved(base),
            kernel=self.kernel.resolved(base),
            initrd=None if self.initrd is None else self.initrd.resolved(base),
            cmdline=self.cmdline,
            memory=self.memory,
        )

    def to_json(self) -> dict[str, Any]:
        """The ``boot`` object of a profile file. Raises nothing."""
        return {
            "platform": self.platform.to_json(),
            "kernel": self.kernel.to_json(),
            "initrd": None if self.initrd is None else self.initrd.to_json(),
            "cmdline": self.cmdline,
            "memory": self.memory,
        }

    @classmethod
    def from_json(cls, value: Any) -> BootSpec:
        """Read a profile's ``boot`` object; raises ProfileError naming the bad field."""
        if not isinstance(value, dict):
            raise ProfileError('"boot" must be an object')
        known = {"platform", "kernel", "initrd", "cmdline", "memory"}
        unknown = set(value) - known
        if unknown:
            raise ProfileError(f"unknown boot field(s): {', '.join(sorted(unknown))}")
        missing = {"kernel", "cmdline", "memory"} - set(value)
        if missing:
            raise ProfileError(f"boot lacks field(s): {', '.join(sorted(missing))}")
        initrd = value.get("initrd")
        return cls(
            platform=Component.from_json(
                value.get("platform", DEFAULT_PLATFORM), "platform", platform=True
            ),
            kernel=Component.from_json(value["kernel"], "kernel"),
            initrd=None if initrd is None else Component.from_json(initrd, "initrd"),
            cmdline=value["cmdline"],
            memory=value["memory"],
        )

    def describe(self) -> str:
        """One line naming every component. Raises nothing."""
        initrd = "none" if self.initrd is None else self.initrd.describe()
        return (
            f"platform {self.platform.value}, kernel {self.kernel.describe()}, "
            f"initrd {initrd}, command line {self.cmdline!r}, memory {self.memory}"
        )


@dataclass(frozen=True, slots=True)
class ManifestSource:
    """A boot taken as it is from a measurement manifest file."""

    path: str

    def to_json(self) -> dict[str, Any]:
        """``{"manifest": path}``. Raises nothing."""
        return {"manifest": self.path}

    def describe(self) -> str:
        """``manifest PATH``. Raises nothing."""
        return f"manifest {self.path}"


@dataclass(frozen=True, slots=True)
class SimulatedBoot:
    """A computed boot: where it came from and the calculator's manifest of it."""

    source: BootSpec | ManifestSource
    manifest: Manifest

    @property
    def mrtd(self) -> bytes:
        """MRTD (the platform's firmware). Raises nothing."""
        return self.manifest.mrtd

    @property
    def rtmrs(self) -> tuple[bytes, bytes, bytes, bytes]:
        """RTMR0..3, the replay of the events. Raises nothing."""
        return self.manifest.rtmrs

    def event_log(self, *, padded: bool = True) -> bytes:
        """The CCEL the firmware leaves: the events, then 0xFF padding to the log area
        (:data:`CCEL_AREA_BYTES`, or the next multiple of it for a longer log) unless
        ``padded`` is False. Raises nothing (the manifest's events all carry SHA-384)."""
        records = encode_event_log(self.manifest.events)
        if not padded:
            return records
        area = max(CCEL_AREA_BYTES, -(-len(records) // CCEL_AREA_BYTES) * CCEL_AREA_BYTES)
        return records + bytes([CCEL_PAD_BYTE]) * (area - len(records))

    def to_json(self) -> dict[str, Any]:
        """The ``boot`` object of a profile file. Raises nothing."""
        return self.source.to_json()


def builtin_platform_names() -> list[str]:
    """The platforms shipped with tdxsim. Raises nothing."""
    folder = resources.files("tdx_boot_attest.tdxsim").joinpath("platforms")
    return sorted(
        entry.name.removesuffix(".json")
        for entry in folder.iterdir()
        if entry.name.endswith(".json")
    )


@lru_cache(maxsize=8)
def builtin_platform(name: str) -> PlatformProfile:
    """A platform shipped with tdxsim (``qemu-tdvf``); raises ProfileError when unknown."""
    if not name or "/" in name or name.startswith("."):
        raise ProfileError(f"no built-in platform called {name!r}")
    resource = (
        resources.files("tdx_boot_attest.tdxsim").joinpath("platforms").joinpath(f"{name}.json")
    )
    try:
        text = resource.read_text(encoding="utf-8")
    except (OSError, FileNotFoundError):
        known = ", ".join(builtin_platform_names())
        raise ProfileError(f"no built-in platform called {name!r} (known: {known})") from None
    return _platform_from_text(text, f"built-in platform {name}")


def _platform_from_text(text: str | bytes, where: str) -> PlatformProfile:
    try:
        return PlatformProfile.from_json(json.loads(text))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MeasuredBootError(f"{where} is not JSON: {exc}") from None
    except MeasurementError as exc:
        raise MeasuredBootError(f"{where}: {exc}", reason=exc.reason) from None


def load_platform(component: Component, read: Reader = read_file) -> PlatformProfile:
    """The platform profile ``component`` names. Raises ProfileError or MeasuredBootError."""
    if component.kind == BUILTIN:
        return builtin_platform(component.value)
    path = Path(component.value)
    return _platform_from_text(read(path, MAX_JSON_BYTES), f"platform profile {path}")


def component_bytes(component: Component, what: str, read: Reader = read_file) -> bytes:
    """The bytes of a kernel or initrd component. Raises ProfileError or MeasuredBootError."""
    if component.kind == SYNTHETIC:
        return (
            synthetic_kernel(component.value)
            if what == "kernel"
            else synthetic_initrd(component.value)
        )
    return read(Path(component.value), MAX_INPUT_BYTES)


def simulate(spec: BootSpec, read: Reader = read_file) -> SimulatedBoot:
    """Boot ``spec``: its manifest, as the calculator computes it.

    Raises MeasuredBootError (an unreadable file, or the calculator's refusal, whose reason
    it carries: ``pe_malformed``, ``setup_header_invalid``, ``platform_profile_invalid``,
    ...) or ProfileError (an unknown built-in platform, a bad label).
    """
    platform = load_platform(spec.platform, read)
    kernel = component_bytes(spec.kernel, "kernel", read)
    initrd = None if spec.initrd is None else component_bytes(spec.initrd, "initrd", read)
    try:
        manifest = compute_manifest(
            kernel,
            initrd,
            spec.cmdline,
            spec.memory_bytes,
            platform,
            kernel_name=spec.kernel.name,
            initrd_name=spec.initrd.name if spec.initrd is not None else "initrd",
        )
    except MeasurementError as exc:
        raise MeasuredBootError(
            f"cannot boot {spec.describe()}: {exc}", reason=exc.reason
        ) from None
    return SimulatedBoot(spec, manifest)


def manifest_from_bytes(data: bytes, where: str) -> Manifest:
    """A measurement manifest from its JSON bytes; raises MeasuredBootError."""
    try:
        return Manifest.from_json(json.loads(data))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MeasuredBootError(f"{where} is not JSON: {exc}") from None
    except MeasurementError as exc:
        raise MeasuredBootError(f"{where}: {exc}", reason=exc.reason) from None


def from_manifest(path: str | Path, read: Reader = read_file) -> SimulatedBoot:
    """The boot a measurement manifest file describes. Raises MeasuredBootError."""
    source = ManifestSource(str(path))
    return SimulatedBoot(source, manifest_from_bytes(read(Path(path), MAX_JSON_BYTES), str(path)))


def boot_from_json(value: Any, base: Path | None, read: Reader = read_file) -> SimulatedBoot:
    """The boot a profile's ``boot`` object describes (relative paths against ``base``).

    Raises ProfileError for a malformed object, MeasuredBootError when it cannot boot.
    """
    if isinstance(value, dict) and set(value) == {"manifest"}:
        path = value["manifest"]
        if not isinstance(path, str) or not path:
            raise ProfileError("boot.manifest must be a file path")
        if base is not None and not Path(path).is_absolute():
            path = str((base / path).resolve())
        return from_manifest(path, read)
    return simulate(BootSpec.from_json(value).resolved(base), read)
