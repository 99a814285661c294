"""Measurement manifests: the registers and events a kernel, initrd and command line give.

:func:`compute_manifest` takes the image's inputs, the TD's memory size and a
:class:`~agent.measurement.platform.PlatformProfile` and returns a :class:`Manifest`:
MRTD (the platform's), RTMR0-3 and the expected event list per register, each event
naming its input in ``detail``, plus the SHA-384 of every input. The JSON form is
versioned (:data:`MANIFEST_FORMAT`, :data:`MANIFEST_VERSION`) and documented in
docs/measurements.md; :meth:`Manifest.from_json` refuses unknown versions, malformed
fields and registers that are not the replay of their events.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final

from tdx_boot_attest.agent.eventlog import (
    Event,
    computed_event,
    event_from_json,
    event_to_json,
    replay,
)
from tdx_boot_attest.agent.measurement.efi import (
    initrd_event,
    kernel_event,
    load_options,
    load_options_event,
)
from tdx_boot_attest.agent.measurement.errors import (
    ManifestError,
    MeasurementError,
    PlatformProfileError,
)
from tdx_boot_attest.agent.measurement.linux_boot import (
    initrd_address,
    qemu_patched_kernel,
    read_setup_header,
)
from tdx_boot_attest.agent.measurement.memory import (
    check_memory_size,
    format_memory_size,
    q35_below_4g,
    q35_hole64_class,
)
from tdx_boot_attest.agent.measurement.pe import authenticode_digest
from tdx_boot_attest.agent.measurement.platform import (
    KERNEL_HEADER_MODES,
    KERNEL_HEADER_PATCHED,
    ROLE_FIRMWARE,
    ROLE_KERNEL,
    ROLE_TD_HOB,
    PlatformProfile,
    stub_slot,
)

MANIFEST_FORMAT: Final = "tdx-boot-attest/measurement-manifest"
MANIFEST_VERSION: Final = 1
REGISTER_NAMES: Final = ("rtmr0", "rtmr1", "rtmr2", "rtmr3")
MAX_MANIFEST_EVENTS: Final = 1024
MAX_NAME_CHARS: Final = 255
MAX_CMDLINE_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class InputFile:
    """A measured file: the name it was given as, its SHA-384 and its size."""

    name: str
    sha384: bytes
    size: int

    def to_json(self) -> dict[str, Any]:
        """``{"file", "sha384", "bytes"}``. Raises nothing."""
        return {"file": self.name, "sha384": self.sha384.hex(), "bytes": self.size}


@dataclass(frozen=True, slots=True)
class Manifest:
    """Expected measurements of one image on one platform at one memory size."""

    mrtd: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    events: tuple[Event, ...]  # in the order the firmware logs them
    kernel: InputFile
    initrd: InputFile | None
    cmdline: str
    memory_bytes: int
    platform_name: str
    platform_sha384: bytes
    kernel_header: str

    def events_for(self, rtmr: int) -> tuple[Event, ...]:
        """The events that extend RTMR ``rtmr`` (0..3), in order. Raises nothing."""
        return tuple(event for event in self.events if event.rtmr == rtmr)

    @property
    def cmdline_sha384(self) -> bytes:
        """SHA-384 of the command line's UTF-8 bytes (as given to -append). Raises nothing."""
        return hashlib.sha384(self.cmdline.encode()).digest()

    def to_json(self) -> dict[str, Any]:
        """The versioned JSON form. Raises nothing."""
        out: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "mrtd": self.mrtd.hex(),
        }
        for name, value in zip(REGISTER_NAMES, self.rtmrs, strict=True):
            out[name] = value.hex()
        out["events"] = {
            name: [
                {**event_to_json(event), "sequence": event.index}
                for event in self.events_for(number)
            ]
            for number, name in enumerate(REGISTER_NAMES)
        }
        out["inputs"] = {
            "kernel": self.kernel.to_json(),
            "initrd": self.initrd.to_json() if self.initrd else None,
            "cmdline": {"text": self.cmdline, "sha384": self.cmdline_sha384.hex()},
        }
        out["memory_bytes"] = self.memory_bytes
        out["kernel_header"] = self.kernel_header
        out["platform"] = {"name": self.platform_name, "sha384": self.platform_sha384.hex()}
        return out

    @classmethod
    def from_json(cls, value: Any) -> Manifest:
        """Read the JSON form. Raises ManifestError naming the bad field."""
        return _manifest_from_json(value)


def compute_manifest(
    kernel: bytes,
    initrd: bytes | None,
    cmdline: str,
    memory_bytes: int,
    platform: PlatformProfile,
    *,
    kernel_name: str = "kernel",
    initrd_name: str = "initrd",
) -> Manifest:
    """The manifest of booting ``kernel`` (+ ``initrd``) with ``cmdline`` on ``platform``.

    ``cmdline`` is passed to QEMU's ``-append`` as UTF-8. Raises a MeasurementError
    subclass: MemorySizeError, SetupHeaderError (not a bzImage, an initrd QEMU would
    refuse), PeFormatError (no PE image for the firmware to load), PlatformProfileError
    (a memory size whose ACPI tables or TD HOB the profile cannot give), or
    MeasurementError for a command line with NUL.
    """
    check_memory_size(memory_bytes)
    raw_cmdline = cmdline.encode()
    if "\x00" in cmdline or len(raw_cmdline) > MAX_CMDLINE_BYTES:
        raise MeasurementError(
            f"the command line must hold no NUL and at most {MAX_CMDLINE_BYTES} bytes"
        )
    reference = platform.td_hob.memory_bytes
    if q35_hole64_class(memory_bytes) != q35_hole64_class(reference):
        raise PlatformProfileError(
            f"platform {platform.name!r} was captured at {format_memory_size(reference)} of "
            f"memory; QEMU's ACPI tables (measured in RTMR0) differ at "
            f"{format_memory_size(memory_bytes)} because the 64-bit PCI window starts above "
            "the RAM: capture a platform profile from a reference boot of that size"
        )
    loader = platform.qemu
    below_4g = q35_below_4g(memory_bytes)
    if loader.kernel_header == KERNEL_HEADER_PATCHED:
        image = qemu_patched_kernel(
            kernel,
            raw_cmdline,
            None if initrd is None else len(initrd),
            below_4g_bytes=below_4g,
            acpi_data_size=loader.acpi_data_size,
            rule=loader.initrd_max,
        )
        how = "setup header as QEMU patches it"
    else:
        header = read_setup_header(kernel)
        if initrd is not None:
            initrd_address(
                header,
                len(initrd),
                below_4g_bytes=below_4g,
                acpi_data_size=loader.acpi_data_size,
                rule=loader.initrd_max,
            )
        image = kernel
        how = "file as it is"
    kernel_digest = authenticode_digest(image)
    kernel_file = InputFile(kernel_name, hashlib.sha384(kernel).digest(), len(kernel))
    initrd_file = (
        None
        if initrd is None
        else InputFile(initrd_name, hashlib.sha384(initrd).digest(), len(initrd))
    )
    # OVMF offers an empty initrd to neither the command line nor the stub.
    offered = initrd_file is not None and initrd_file.size > 0
    options = load_options(raw_cmdline, with_initrd=offered)
    stub_events: list[Event] = []
    if options:
        measured = options.decode("utf-16-le").rstrip("\x00")
        stub_events.append(load_options_event(options, detail=f"command line {measured!r}"))
    if initrd_file is not None and offered:
        stub_events.append(initrd_event(initrd_file.sha384, detail=f"initrd {initrd_name}"))
    events: list[Event] = []
    slot = stub_slot(platform.events)
    for position, item in enumerate(platform.events):
        if position == slot:
            events.extend(stub_events)
        if item.role == ROLE_TD_HOB:
            digest = platform.td_hob.digest_for(memory_bytes)
            events.append(
                computed_event(
                    item.event.mr_index,
                    item.event.event_type,
                    item.event.data,
                    digest,
                    detail=f"TD HOB for {format_memory_size(memory_bytes)} of memory",
                )
            )
        elif item.role == ROLE_KERNEL:
            events.append(kernel_event(kernel_digest, detail=f"kernel {kernel_name} ({how})"))
        elif item.role == ROLE_FIRMWARE:
            events.append(item.event)
    if slot == len(platform.events):
        events.extend(stub_events)
    numbered = tuple(_renumber(event, index) for index, event in enumerate(events))
    return Manifest(
        mrtd=platform.mrtd,
        rtmrs=replay(numbered),
        events=numbered,
        kernel=kernel_file,
        initrd=initrd_file,
        cmdline=cmdline,
        memory_bytes=memory_bytes,
        platform_name=platform.name,
        platform_sha384=platform.digest(),
        kernel_header=loader.kernel_header,
    )


def _renumber(event: Event, index: int) -> Event:
    digest = event.sha384 or b""
    return computed_event(
        event.mr_index, event.event_type, event.data, digest, index=index, detail=event.detail
    )


# -- reading the JSON form ---------------------------------------------------------------


def _manifest_from_json(value: Any) -> Manifest:
    if not isinstance(value, dict):
        raise ManifestError("a measurement manifest is a JSON object")
    if value.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f'"format" must be "{MANIFEST_FORMAT}"')
    version = value.get("version")
    if version != MANIFEST_VERSION:
        raise ManifestError(
            f"manifest version {version!r} is not supported (this calculator reads "
            f"version {MANIFEST_VERSION})"
        )
    registers = tuple(_hex48(value, name) for name in REGISTER_NAMES)
    events = _events_from_json(value.get("events"))
    replayed = replay(events)
    for number, name in enumerate(REGISTER_NAMES):
        if replayed[number] != registers[number]:
            raise ManifestError(f'"{name}" is not the replay of its events')
    inputs = value.get("inputs")
    if not isinstance(inputs, dict):
        raise ManifestError('"inputs" must be an object')
    cmdline = inputs.get("cmdline")
    if not isinstance(cmdline, dict) or not isinstance(cmdline.get("text"), str):
        raise ManifestError('inputs."cmdline" must be {"text", "sha384"}')
    if (
        _hex48(cmdline, "sha384", "inputs.cmdline.")
        != hashlib.sha384(cmdline["text"].encode()).digest()
    ):
        raise ManifestError("inputs.cmdline.sha384 is not the SHA-384 of its text")
    platform = value.get("platform")
    if not isinstance(platform, dict) or not isinstance(platform.get("name"), str):
        raise ManifestError('"platform" must be {"name", "sha384"}')
    memory = value.get("memory_bytes")
    try:
        check_memory_size(memory)  # type: ignore[arg-type]
    except MeasurementError as exc:
        raise ManifestError(f'"memory_bytes": {exc}') from None
    header = value.get("kernel_header")
    if header not in KERNEL_HEADER_MODES:
        raise ManifestError(f'"kernel_header" must be one of {", ".join(KERNEL_HEADER_MODES)}')
    initrd = inputs.get("initrd")
    return Manifest(
        mrtd=_hex48(value, "mrtd"),
        rtmrs=(registers[0], registers[1], registers[2], registers[3]),
        events=events,
        kernel=_input_from_json(inputs.get("kernel"), "kernel"),
        initrd=None if initrd is None else _input_from_json(initrd, "initrd"),
        cmdline=cmdline["text"],
        memory_bytes=int(memory),  # type: ignore[arg-type]
        platform_name=platform["name"],
        platform_sha384=_hex48(platform, "sha384", "platform."),
        kernel_header=header,
    )


def _hex48(value: dict[str, Any], key: str, where: str = "") -> bytes:
    text = value.get(key)
    if isinstance(text, str) and len(text) == 96 and text == text.lower():
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    raise ManifestError(f'{where}"{key}" must be 96 lowercase hex characters')


def _input_from_json(value: Any, what: str) -> InputFile:
    if not isinstance(value, dict):
        raise ManifestError(f'inputs."{what}" must be {{"file", "sha384", "bytes"}}')
    name, size = value.get("file"), value.get("bytes")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS:
        raise ManifestError(f'inputs.{what}."file" must be a name of 1 to {MAX_NAME_CHARS} chars')
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestError(f'inputs.{what}."bytes" must be a non-negative integer')
    return InputFile(name, _hex48(value, "sha384", f"inputs.{what}."), size)


def _events_from_json(value: Any) -> tuple[Event, ...]:
    if not isinstance(value, dict) or set(value) != set(REGISTER_NAMES):
        raise ManifestError(f'"events" must be an object with keys {", ".join(REGISTER_NAMES)}')
    ordered: dict[int, Event] = {}
    total = 0
    for number, name in enumerate(REGISTER_NAMES):
        items = value[name]
        if not isinstance(items, list):
            raise ManifestError(f'events."{name}" must be a list')
        total += len(items)
        if total > MAX_MANIFEST_EVENTS:
            raise ManifestError(f"a manifest holds at most {MAX_MANIFEST_EVENTS} events")
        for item in items:
            sequence = item.get("sequence") if isinstance(item, dict) else None
            if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 0:
                raise ManifestError(f'every event of events."{name}" needs a "sequence" number')
            try:
                event = event_from_json(item, sequence)
            except ValueError as exc:
                raise ManifestError(f"events.{name}: {exc}") from None
            if event.rtmr != number:
                raise ManifestError(f"events.{name}: event {sequence} extends another register")
            if sequence in ordered:
                raise ManifestError(f"two events have sequence number {sequence}")
            ordered[sequence] = event
    if sorted(ordered) != list(range(len(ordered))):
        raise ManifestError('event "sequence" numbers must be 0, 1, 2, ... without gaps')
    return tuple(ordered[n] for n in range(len(ordered)))
