"""Measurement profiles: a JSON file naming what a simulated TD measures (an "image").

Fields are lowercase hex: ``mrtd``, ``rtmr0``..``rtmr3``, ``mrconfigid``, ``mrowner``,
``mrownerconfig``, ``mrseam`` (48 bytes each), ``td_attributes``, ``xfam`` (8 bytes each) and
optionally ``tee_tcb_svn`` (16 bytes; null means "whatever the platform's TCB preset
reports"). ``name`` is free text.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

from tdxsim.errors import ProfileError

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
    """The measurements of one simulated TD image (hex strings, validated on creation)."""

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

    def __post_init__(self) -> None:
        for name, size in _SIZES.items():
            object.__setattr__(self, name, _hex_field(name, getattr(self, name), size))
        if self.tee_tcb_svn is not None:
            object.__setattr__(
                self, "tee_tcb_svn", _hex_field("tee_tcb_svn", self.tee_tcb_svn, TEE_TCB_SVN_BYTES)
            )
        if not isinstance(self.name, str):
            raise ProfileError("name must be a string")

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

    def with_rtmr(self, index: int, value: str) -> Profile:
        """A copy with RTMR ``index`` set to ``value`` (hex); raises ProfileError."""
        self.rtmr(index)
        return self.replace(**{f"rtmr{index}": value})

    def with_rtmrs(self, values: tuple[str, str, str, str] | list[str]) -> Profile:
        """A copy with all four RTMRs replaced; raises ProfileError."""
        if len(values) != 4:
            raise ProfileError("exactly four RTMR values are needed")
        return self.replace(**{f"rtmr{i}": v for i, v in enumerate(values)})

    def with_mrtd(self, value: str) -> Profile:
        """A copy with MRTD set to ``value`` (hex); raises ProfileError."""
        return self.replace(mrtd=value)

    def replace(self, **changes: Any) -> Profile:
        """A copy with the given fields changed; raises ProfileError for a bad field."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ProfileError(f"unknown profile field(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The profile as a JSON object. Raises nothing."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Profile:
        """A profile from a JSON object; raises ProfileError for missing or bad fields."""
        if not isinstance(data, dict):
            raise ProfileError("a profile must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ProfileError(f"unknown profile field(s): {', '.join(sorted(unknown))}")
        missing = {"name", "mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"} - set(data)
        if missing:
            raise ProfileError(f"profile lacks field(s): {', '.join(sorted(missing))}")
        return cls(**data)

    def dumps(self) -> str:
        """The profile as indented JSON text with a final newline. Raises nothing."""
        return json.dumps(self.to_json(), indent=2) + "\n"

    @classmethod
    def loads(cls, text: str) -> Profile:
        """Parse profile JSON text; raises ProfileError."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProfileError(f"profile is not valid JSON: {exc}") from None
        return cls.from_json(data)

    @classmethod
    def load(cls, path: Path | str) -> Profile:
        """Read a profile file; raises ProfileError when unreadable or invalid."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ProfileError(f"cannot read profile {path}: {exc.strerror or exc}") from None
        return cls.loads(text)

    def save(self, path: Path | str) -> None:
        """Write the profile as JSON; raises OSError when the file cannot be written."""
        Path(path).write_text(self.dumps(), encoding="utf-8")

    @classmethod
    def builtin(cls, name: str) -> Profile:
        """A profile shipped with the package (``default``, ``other``); raises ProfileError."""
        resource = resources.files("tdxsim").joinpath("profiles").joinpath(f"{name}.json")
        try:
            text = resource.read_text(encoding="utf-8")
        except (OSError, FileNotFoundError):
            raise ProfileError(f"no built-in profile called {name!r}") from None
        return cls.loads(text)

    @classmethod
    def default(cls) -> Profile:
        """The built-in ``default`` profile. Raises ProfileError if the package is damaged."""
        return cls.builtin("default")
