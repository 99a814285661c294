"""Measurement profiles: what one simulated TD image measures.

A profile either **boots** named components (:class:`tdxsim.measured_boot.BootSpec`:
platform, kernel, initrd, command line, memory size), and then MRTD and RTMR0-3 are
computed by the measurement calculator and the TD has a firmware event log; or it gives
**raw register values** (MRTD, RTMR0-3), with no event log, for tests that need
measurements no boot produces. Both carry the other TD report fields: ``mrconfigid``,
``mrowner``, ``mrownerconfig``, ``mrseam`` (48 bytes each), ``td_attributes``, ``xfam``
(8 bytes each) and ``tee_tcb_svn`` (16 bytes; null means "whatever the platform's TCB
preset reports").

The file format (:data:`PROFILE_FORMAT`, version :data:`PROFILE_VERSION`) is documented
in docs/simulator.md; version 1 files (the flat form without ``format``, registers only)
still load as raw-register profiles. A measured profile's file names its components and
never its registers.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Final

from tdx_boot_attest.tdxsim.errors import ProfileError
from tdx_boot_attest.tdxsim.measured_boot import (
    BootSpec,
    Component,
    SimulatedBoot,
    boot_from_json,
    simulate,
)

PROFILE_FORMAT: Final = "tdxsim/profile"
PROFILE_VERSION: Final = 2
REGISTER_FIELDS: Final = ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3")
_SIZES: Final = {
    "mrtd": 48,
    "rtmr0": 48,
    "rtmr1": 48,
    "rtmr2": 48,
    "rtmr3": 48,
    "mrconfigid": 48,
    "mrowner": 48,
    "mrownerconfig": 48,
    "mrseam": 48,
    "td_attributes": 8,
    "xfam": 8,
}
TEE_TCB_SVN_BYTES: Final = 16
# SEPT_VE_DISABLE (bit 28) set, DEBUG clear: what a production TD reports.
DEFAULT_TD_ATTRIBUTES: Final = "0000001000000000"
_OTHER_FIELDS: Final = (
    "mrconfigid",
    "mrowner",
    "mrownerconfig",
    "mrseam",
    "td_attributes",
    "xfam",
    "tee_tcb_svn",
)


def _hex_field(name: str, value: Any, size: int) -> str:
    if not isinstance(value, str):
        raise ProfileError(f"{name} must be a hex string")
    text = value.lower().removeprefix("0x")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ProfileError(f"{name} is not hexadecimal") from None
    if len(raw) != size:
        raise ProfileError(f"{name} must be {size} bytes ({2 * size} hex digits), got {len(raw)}")
    return raw.hex()


@dataclass(frozen=True, slots=True)
class Profile:
    """The measurements of one simulated TD image (hex strings, validated on creation).

    ``boot`` is the simulated boot the registers come from, or None for raw register
    values; a profile with a boot always holds that boot's registers.
    """

    name: str
    mrtd: str
    rtmr0: str
    rtmr1: str
    rtmr2: str
    rtmr3: str
    mrconfigid: str = "00" * 48
    mrowner: str = "00" * 48
    mrownerconfig: str = "00" * 48
    mrseam: str = "00" * 48
    td_attributes: str = DEFAULT_TD_ATTRIBUTES
    xfam: str = "e702060000000000"
    tee_tcb_svn: str | None = None
    boot: SimulatedBoot | None = None

    def __post_init__(self) -> None:
        for name, size in _SIZES.items():
            object.__setattr__(self, name, _hex_field(name, getattr(self, name), size))
        if self.tee_tcb_svn is not None:
            object.__setattr__(
                self, "tee_tcb_svn", _hex_field("tee_tcb_svn", self.tee_tcb_svn, TEE_TCB_SVN_BYTES)
            )
        if not isinstance(self.name, str):
            raise ProfileError("name must be a string")
        if self.boot is not None:
            computed = (self.boot.mrtd, *self.boot.rtmrs)
            if tuple(self.measurement(f) for f in REGISTER_FIELDS) != computed:
                raise ProfileError(
                    "a profile that boots components holds the registers its boot gives"
                )

    # -- making profiles ----------------------------------------------------------------

    @classmethod
    def measured(cls, name: str, boot: SimulatedBoot, **fields: Any) -> Profile:
        """A profile whose registers come from ``boot``; ``fields`` sets the others
        (``mrowner``, ``td_attributes``, ...). Raises ProfileError for a bad field."""
        unknown = set(fields) - set(_OTHER_FIELDS)
        if unknown:
            raise ProfileError(
                f"unknown or computed profile field(s): {', '.join(sorted(unknown))}"
            )
        registers = {f"rtmr{n}": value.hex() for n, value in enumerate(boot.rtmrs)}
        return cls(name=name, mrtd=boot.mrtd.hex(), **registers, boot=boot, **fields)

    @classmethod
    def booting(cls, name: str, spec: BootSpec, **fields: Any) -> Profile:
        """A profile that boots ``spec`` (computed now). Raises ProfileError or
        MeasuredBootError (an input cannot be read or measured)."""
        return cls.measured(name, simulate(spec), **fields)

    # -- reading ------------------------------------------------------------------------

    @property
    def rtmrs(self) -> tuple[str, str, str, str]:
        """RTMR0..RTMR3 as hex. Raises nothing."""
        return (self.rtmr0, self.rtmr1, self.rtmr2, self.rtmr3)

    def rtmr(self, index: int) -> str:
        """RTMR ``index`` as hex; raises ProfileError for an index outside 0..3."""
        if index not in range(4):
            raise ProfileError(f"RTMR index must be 0..3, got {index}")
        return self.rtmrs[index]

    def measurement(self, field: str) -> bytes:
        """The raw bytes of a hex field (``mrtd``, ``rtmr1``, ...); raises ProfileError."""
        if field not in _SIZES:
            raise ProfileError(f"unknown profile field {field!r}")
        return bytes.fromhex(getattr(self, field))

    @property
    def spec(self) -> BootSpec | None:
        """The named components this profile boots, or None (raw registers, or a boot
        taken from a manifest). Raises nothing."""
        if self.boot is not None and isinstance(self.boot.source, BootSpec):
            return self.boot.source
        return None

    def event_log(self, *, padded: bool = True) -> bytes | None:
        """The CCEL of this profile's boot (see SimulatedBoot.event_log), or None for raw
        register values: no boot wrote them. Raises nothing."""
        return None if self.boot is None else self.boot.event_log(padded=padded)

    # -- changing -----------------------------------------------------------------------

    def with_rtmr(self, index: int, value: str) -> Profile:
        """A copy with RTMR ``index`` set to ``value`` (hex): raw register values, no boot
        and no event log. Raises ProfileError."""
        self.rtmr(index)
        return self.replace(**{f"rtmr{index}": value})

    def with_rtmrs(self, values: tuple[str, str, str, str] | list[str]) -> Profile:
        """A copy with all four RTMRs replaced (raw register values); raises ProfileError."""
        if len(values) != 4:
            raise ProfileError("exactly four RTMR values are needed")
        return self.replace(**{f"rtmr{i}": v for i, v in enumerate(values)})

    def with_mrtd(self, value: str) -> Profile:
        """A copy with MRTD set to ``value`` (hex, raw register values); raises ProfileError."""
        return self.replace(mrtd=value)

    def with_components(self, **changes: Any) -> Profile:
        """A copy booting the same components but ``changes`` (``platform``, ``kernel``,
        ``initrd``: a :class:`Component` or None; ``cmdline``, ``memory``: text),
        computed now. Raises ProfileError for a profile that names no components or a
        bad change, MeasuredBootError when the new boot cannot be measured."""
        spec = self.spec
        if spec is None:
            raise ProfileError(
                f"profile {self.name!r} names no boot components (raw registers or a manifest)"
            )
        unknown = set(changes) - {f.name for f in dataclasses.fields(BootSpec)}
        if unknown:
            raise ProfileError(f"unknown boot component(s): {', '.join(sorted(unknown))}")
        for key in ("platform", "kernel", "initrd"):
            value = changes.get(key)
            if key in changes and not isinstance(value, Component) and value is not None:
                raise ProfileError(f"{key} must be a Component")
        return self.with_boot(simulate(dataclasses.replace(spec, **changes)))

    def with_boot(self, boot: SimulatedBoot) -> Profile:
        """A copy whose registers and event log come from ``boot``. Raises nothing."""
        registers = {f"rtmr{n}": value.hex() for n, value in enumerate(boot.rtmrs)}
        return dataclasses.replace(self, mrtd=boot.mrtd.hex(), **registers, boot=boot)

    def replace(self, **changes: Any) -> Profile:
        """A copy with the given fields changed; changing MRTD or an RTMR gives raw register
        values (no boot). Raises ProfileError for a bad field."""
        settable = {f.name for f in dataclasses.fields(self)} - {"boot"}
        unknown = set(changes) - settable
        if unknown:
            raise ProfileError(f"unknown profile field(s): {', '.join(sorted(unknown))}")
        if set(changes) & set(REGISTER_FIELDS):
            changes["boot"] = None
        return dataclasses.replace(self, **changes)

    # -- the file format ----------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The profile as a version-2 JSON object. Raises nothing."""
        out: dict[str, Any] = {"format": PROFILE_FORMAT, "version": PROFILE_VERSION}
        out["name"] = self.name
        if self.boot is not None:
            out["boot"] = self.boot.to_json()
        else:
            out["registers"] = {field: getattr(self, field) for field in REGISTER_FIELDS}
        for field in _OTHER_FIELDS:
            out[field] = getattr(self, field)
        return out

    @classmethod
    def from_json(cls, data: Any, *, base: Path | None = None) -> Profile:
        """A profile from a JSON object; relative file paths in ``boot`` are read against
        ``base``. Raises ProfileError for missing or bad fields, MeasuredBootError when
        the boot cannot be computed."""
        if not isinstance(data, dict):
            raise ProfileError("a profile must be a JSON object")
        if "format" not in data and "version" not in data:
            return _from_version_1(data)
        if data.get("format") != PROFILE_FORMAT:
            raise ProfileError(f'"format" must be "{PROFILE_FORMAT}"')
        if data.get("version") != PROFILE_VERSION:
            raise ProfileError(
                f"profile version {data.get('version')!r} is not supported (tdxsim reads "
                f"version {PROFILE_VERSION} and the flat version 1)"
            )
        known = {"format", "version", "name", "boot", "registers", *_OTHER_FIELDS}
        unknown = set(data) - known
        if unknown:
            raise ProfileError(f"unknown profile field(s): {', '.join(sorted(unknown))}")
        if "name" not in data:
            raise ProfileError("profile lacks field(s): name")
        if ("boot" in data) == ("registers" in data):
            raise ProfileError('a profile has either "boot" (components) or "registers"')
        fields = {key: data[key] for key in _OTHER_FIELDS if key in data}
        if "boot" in data:
            return cls.measured(data["name"], boot_from_json(data["boot"], base), **fields)
        registers = data["registers"]
        if not isinstance(registers, dict) or set(registers) != set(REGISTER_FIELDS):
            raise ProfileError(f'"registers" must hold exactly {", ".join(REGISTER_FIELDS)}')
        return cls(name=data["name"], **registers, **fields)

    def dumps(self) -> str:
        """The profile as indented JSON text with a final newline. Raises nothing."""
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def loads(cls, text: str, *, base: Path | None = None) -> Profile:
        """Parse profile JSON text; raises ProfileError or MeasuredBootError."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProfileError(f"profile is not valid JSON: {exc}") from None
        return cls.from_json(data, base=base)

    @classmethod
    def load(cls, path: Path | str) -> Profile:
        """Read a profile file (its relative paths are relative to its directory).

        Raises ProfileError when unreadable or invalid, MeasuredBootError when its boot
        cannot be computed.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ProfileError(f"cannot read profile {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ProfileError(f"profile {path} is not UTF-8 text") from None
        return cls.loads(text, base=path.resolve().parent)

    def save(self, path: Path | str) -> None:
        """Write the profile as JSON; raises OSError when the file cannot be written."""
        Path(path).write_text(self.dumps(), encoding="utf-8")

    @classmethod
    def find(cls, spec: str | None) -> Profile:
        """A profile from a file path, or a built-in one by name (``default``, ``other``);
        None gives ``default``. A name without ``/`` that does not end in ``.json`` and
        is not an existing file is a built-in name.

        Raises ProfileError when neither exists or the file is invalid, MeasuredBootError
        when its boot cannot be computed.
        """
        if spec is None:
            return cls.default()
        path = Path(spec)
        if path.exists():
            return cls.load(path)
        if "/" not in spec and not spec.endswith(".json"):
            return cls.builtin(spec)
        raise ProfileError(f"profile file {spec} does not exist")

    @classmethod
    def builtin(cls, name: str) -> Profile:
        """A profile shipped with the package (``default``, ``other``); raises ProfileError."""
        return _builtin(name)

    @classmethod
    def default(cls) -> Profile:
        """The built-in ``default`` profile. Raises ProfileError if the package is damaged."""
        return cls.builtin("default")


@lru_cache(maxsize=16)
def _builtin(name: str) -> Profile:
    if not name or "/" in name or name.startswith("."):
        raise ProfileError(f"no built-in profile called {name!r}")
    resource = (
        resources.files("tdx_boot_attest.tdxsim").joinpath("profiles").joinpath(f"{name}.json")
    )
    try:
        text = resource.read_text(encoding="utf-8")
    except (OSError, FileNotFoundError):
        raise ProfileError(f"no built-in profile called {name!r}") from None
    return Profile.loads(text)


def _from_version_1(data: dict[str, Any]) -> Profile:
    known = {f.name for f in dataclasses.fields(Profile)} - {"boot"}
    unknown = set(data) - known
    if unknown:
        raise ProfileError(f"unknown profile field(s): {', '.join(sorted(unknown))}")
    missing = {"name", *REGISTER_FIELDS} - set(data)
    if missing:
        raise ProfileError(f"profile lacks field(s): {', '.join(sorted(missing))}")
    return Profile(**data)
