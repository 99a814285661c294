"""Measurement profiles: components or raw registers, validation, the file format, built-ins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tdx_boot_attest.agent.eventlog import parse_event_log
from tdx_boot_attest.tdxsim.errors import MeasuredBootError, ProfileError
from tdx_boot_attest.tdxsim.measured_boot import SIMULATED_MRTD, Component, simulate
from tdx_boot_attest.tdxsim.profile import PROFILE_FORMAT, PROFILE_VERSION, Profile
from tdx_boot_attest.tdxsim.synthetic import synthetic_kernel


def test_builtin_profiles_boot_and_differ_in_rtmr1() -> None:
    default = Profile.default()
    other = Profile.builtin("other")

    assert default.name == "default"
    assert other.name == "other"
    assert default.td_attributes == "0000001000000000"
    assert default.tee_tcb_svn is None
    assert default.mrtd == SIMULATED_MRTD.hex()
    changed = [f for f in ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3") if
               getattr(default, f) != getattr(other, f)]  # fmt: skip
    assert changed == ["rtmr1"]
    for profile in (default, other):
        log = parse_event_log(profile.event_log() or b"")
        assert [value.hex() for value in log.replay()] == list(profile.rtmrs)


def test_a_measured_profile_file_names_components_not_registers(tmp_path: Path) -> None:
    document = json.loads(Profile.default().dumps())

    assert (document["format"], document["version"]) == (PROFILE_FORMAT, PROFILE_VERSION)
    assert "registers" not in document
    assert not {"mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"} & set(document)
    assert document["boot"] == {
        "platform": "qemu-tdvf",
        "kernel": {"synthetic": "vmlinuz-6.1.0-18-amd64"},
        "initrd": {"synthetic": "initrd.img-6.1.0-18-amd64"},
        "cmdline": "root=/dev/mapper/root ro console=ttyS0",
        "memory": "2G",
    }
    path = tmp_path / "p.json"
    Profile.default().replace(name="copy", mrowner="ab" * 48).save(path)
    loaded = Profile.load(path)
    assert loaded.rtmrs == Profile.default().rtmrs
    assert (loaded.name, loaded.mrowner) == ("copy", "ab" * 48)
    assert loaded.event_log() == Profile.default().event_log()


def test_file_components_are_relative_to_the_profile(tmp_path: Path) -> None:
    folder = tmp_path / "image"
    folder.mkdir()
    (folder / "vmlinuz").write_bytes(synthetic_kernel("vmlinuz-6.1.0-18-amd64"))
    document = json.loads(Profile.default().dumps())
    document["boot"]["kernel"] = {"file": "vmlinuz"}
    (folder / "p.json").write_text(json.dumps(document), encoding="utf-8")

    loaded = Profile.load(folder / "p.json")

    assert loaded.rtmrs == Profile.default().rtmrs
    assert loaded.spec is not None
    assert loaded.spec.kernel == Component.file(str(folder / "vmlinuz"))
    assert json.loads(loaded.dumps())["boot"]["kernel"] == {"file": str(folder / "vmlinuz")}


def test_raw_register_profiles_have_no_event_log(tmp_path: Path) -> None:
    profile = Profile.default().with_rtmr(3, "AB" * 48).replace(name="mine", tee_tcb_svn="07" * 16)
    path = tmp_path / "p.json"

    profile.save(path)
    loaded = Profile.load(path)

    assert loaded == profile
    assert loaded.rtmr3 == "ab" * 48
    assert loaded.rtmr1 == Profile.default().rtmr1
    assert loaded.boot is None and loaded.spec is None
    assert loaded.event_log() is None
    assert set(json.loads(path.read_text())["registers"]) == {
        "mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3",
    }  # fmt: skip


def test_version_1_files_load_as_raw_registers() -> None:
    flat = {"name": "old", "mrtd": "11" * 48, **{f"rtmr{n}": f"{n}{n}" * 48 for n in range(4)}}

    profile = Profile.loads(json.dumps(flat))

    assert (profile.name, profile.mrtd, profile.rtmr2) == ("old", "11" * 48, "22" * 48)
    assert profile.event_log() is None


def test_with_components_boots_again() -> None:
    changed = Profile.default().with_components(initrd=Component.synthetic("initrd-rebuilt"))

    assert changed.rtmr2 != Profile.default().rtmr2
    assert (changed.rtmr0, changed.rtmr1) == Profile.default().rtmrs[:2]
    assert changed.spec is not None and changed.spec.initrd == Component.synthetic("initrd-rebuilt")
    with pytest.raises(ProfileError, match="names no boot components"):
        Profile.default().with_rtmr(1, "00" * 48).with_components(cmdline="x")
    with pytest.raises(ProfileError, match="unknown boot component"):
        Profile.default().with_components(colour="blue")
    with pytest.raises(MeasuredBootError):
        Profile.default().with_components(memory="64G")


def test_a_measured_profile_always_holds_its_boots_registers() -> None:
    boot = simulate(Profile.default().spec)  # type: ignore[arg-type]
    with pytest.raises(ProfileError, match="registers its boot gives"):
        Profile(
            name="x", mrtd=boot.mrtd.hex(), rtmr0="00" * 48, rtmr1="00" * 48, rtmr2="00" * 48,
            rtmr3="00" * 48, boot=boot,
        )  # fmt: skip
    with pytest.raises(ProfileError, match="unknown profile field"):
        Profile.default().replace(boot=None)
    assert Profile.default().with_mrtd("aa" * 48).boot is None


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


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"format": "other", "version": 2, "name": "x"}, '"format"'),
        ({"format": PROFILE_FORMAT, "version": 3, "name": "x"}, "version 3"),
        ({"format": PROFILE_FORMAT, "version": 2, "name": "x"}, "either"),
        (
            {"format": PROFILE_FORMAT, "version": 2, "name": "x", "boot": {}, "registers": {}},
            "either",
        ),
        ({"format": PROFILE_FORMAT, "version": 2, "name": "x", "registers": {}}, "exactly"),
        ({"format": PROFILE_FORMAT, "version": 2, "boot": {}}, "lacks"),
        ({"format": PROFILE_FORMAT, "version": 2, "name": "x", "boot": [], "y": 1}, "unknown"),
        ({"format": PROFILE_FORMAT, "version": 2, "name": "x", "boot": []}, "must be an object"),
        (
            {"format": PROFILE_FORMAT, "version": 2, "name": "x", "boot": {"manifest": 5}},
            "manifest",
        ),
    ],
)
def test_bad_files_are_refused(document: dict[str, object], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        Profile.from_json(document)


def test_missing_fields_and_bad_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="lacks"):
        Profile.loads('{"name": "x", "mrtd": "' + "00" * 48 + '"}')
    with pytest.raises(ProfileError, match="not valid JSON"):
        Profile.loads("{")
    with pytest.raises(ProfileError, match="cannot read"):
        Profile.load(tmp_path / "absent.json")
    with pytest.raises(ProfileError, match="no built-in profile"):
        Profile.builtin("nope")
    with pytest.raises(ProfileError, match="no built-in profile"):
        Profile.builtin("../profiles/default")
    with pytest.raises(ProfileError, match="RTMR index"):
        Profile.default().with_rtmr(4, "00" * 48)
    with pytest.raises(ProfileError, match="does not exist"):
        Profile.find(str(tmp_path / "absent.json"))
    assert Profile.find("other") == Profile.builtin("other")
    assert Profile.find(None) == Profile.default()
