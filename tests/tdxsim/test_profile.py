"""Measurement profiles: validation, JSON round trip, built-ins."""

from __future__ import annotations

from pathlib import Path

import pytest

from tdxsim.errors import ProfileError
from tdxsim.profile import Profile


def test_builtin_profiles_load_and_differ_in_rtmr1() -> None:
    default = Profile.default()
    other = Profile.builtin("other")

    assert default.name == "default"
    assert other.name == "other"
    assert default.td_attributes == "0000001000000000"
    assert default.tee_tcb_svn is None
    changed = [f for f in ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3") if
               getattr(default, f) != getattr(other, f)]  # fmt: skip
    assert changed == ["rtmr1"]


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    profile = Profile.default().with_rtmr(3, "AB" * 48).replace(name="mine", tee_tcb_svn="07" * 16)
    path = tmp_path / "p.json"

    profile.save(path)
    loaded = Profile.load(path)

    assert loaded == profile
    assert loaded.rtmr3 == "ab" * 48


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mrtd": "00" * 47}, "mrtd must be 48 bytes"),
        ({"rtmr2": "xyz"}, "not hexadecimal"),
        ({"td_attributes": 5}, "hex string"),
        ({"tee_tcb_svn": "00"}, "tee_tcb_svn must be 16 bytes"),
        ({"colour": "blue"}, "unknown profile field"),
    ],
)
def test_bad_fields_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        Profile.default().replace(**change)


def test_missing_fields_and_bad_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="lacks"):
        Profile.loads('{"name": "x", "mrtd": "' + "00" * 48 + '"}')
    with pytest.raises(ProfileError, match="not valid JSON"):
        Profile.loads("{")
    with pytest.raises(ProfileError, match="cannot read"):
        Profile.load(tmp_path / "absent.json")
    with pytest.raises(ProfileError, match="no built-in profile"):
        Profile.builtin("nope")
    with pytest.raises(ProfileError, match="RTMR index"):
        Profile.default().with_rtmr(4, "00" * 48)
