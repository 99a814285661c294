"""The simulator's measured boot: real firmware's events, digests by the calculator's rules.

The built-in platform is checked against what ``capture_platform`` gives from the real
QEMU direct-boot log, a simulated boot's CCEL against that log's event types and order,
and the image's own digests against values computed here from the digest rules.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from tdx_boot_attest.agent.eventlog import (
    EV_EFI_BOOT_SERVICES_APPLICATION,
    Event,
    linux_tag,
    parse_event_log,
    replay,
)
from tdx_boot_attest.agent.measurement.manifest import compute_manifest
from tdx_boot_attest.agent.measurement.platform import capture_platform
from tdx_boot_attest.tdxsim.errors import MeasuredBootError, ProfileError
from tdx_boot_attest.tdxsim.measured_boot import (
    CCEL_AREA_BYTES,
    DEFAULT_PLATFORM,
    SIMULATED_MRTD,
    BootSpec,
    Component,
    builtin_platform,
    builtin_platform_names,
    from_manifest,
    simulate,
)
from tdx_boot_attest.tdxsim.profile import Profile
from tdx_boot_attest.tdxsim.synthetic import synthetic_initrd, synthetic_kernel

REAL_LOG = (
    Path(__file__).resolve().parents[1] / "assets" / "eventlog" / ("qemu-direct-boot-initrd.ccel")
)
SPEC = BootSpec(
    platform=Component.builtin(DEFAULT_PLATFORM),
    kernel=Component.synthetic("vmlinuz-test"),
    initrd=Component.synthetic("initrd-test"),
    cmdline="console=ttyS0 root=/dev/mapper/root ro",
    memory="2G",
)


def _shape(events: tuple[Event, ...] | list[Event]) -> list[tuple[int, int, str]]:
    return [(e.mr_index, e.event_type, e.name) for e in events]


def _registers_that_differ(a: BootSpec, b: BootSpec) -> list[int]:
    left, right = simulate(a).rtmrs, simulate(b).rtmrs
    return [n for n in range(4) if left[n] != right[n]]


def test_the_builtin_platform_is_what_capture_gives_from_the_real_log() -> None:
    log = REAL_LOG.read_bytes()
    captured = capture_platform(
        DEFAULT_PLATFORM,
        mrtd=SIMULATED_MRTD,
        rtmrs=replay(parse_event_log(log).events),
        event_log=log,
    )
    shipped = resources.files("tdx_boot_attest.tdxsim").joinpath(
        "platforms", f"{DEFAULT_PLATFORM}.json"
    )

    assert json.loads(shipped.read_text(encoding="utf-8")) == captured.to_json()
    assert builtin_platform(DEFAULT_PLATFORM) == captured
    assert builtin_platform_names() == [DEFAULT_PLATFORM]


def test_a_simulated_boot_logs_what_real_tdvf_logs() -> None:
    boot = simulate(SPEC)
    real = parse_event_log(REAL_LOG.read_bytes())
    ccel = boot.event_log()
    written = parse_event_log(ccel)

    # Same events in the same order: TD HOB, configuration FV, Secure Boot variables,
    # separators, ACPI DATA, the kernel, BootOrder/Boot0000, EFI actions, stub tags.
    assert _shape(written.events) == _shape(real.events)
    assert written.algorithms == real.algorithms
    # The log area is padded like the firmware's, and its replay is the registers.
    assert len(ccel) == CCEL_AREA_BYTES
    assert set(ccel[written.length :]) == {0xFF}
    assert written.replay() == boot.rtmrs
    assert boot.rtmrs[3] == bytes(48)
    assert boot.mrtd == SIMULATED_MRTD
    # At the platform's own memory size every RTMR0 event is the real one, digest for
    # digest; so are the firmware's own RTMR1 actions.
    for mine, theirs in zip(written.events, real.events, strict=True):
        if mine.rtmr == 0 or mine.name.startswith("EFI action"):
            assert mine.sha384 == theirs.sha384, mine.name


def test_the_image_events_carry_the_digests_of_the_named_inputs() -> None:
    events = simulate(SPEC).manifest.events
    tags = {linux_tag(e.data): e for e in events if linux_tag(e.data) is not None}
    kernel = next(e for e in events if e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION)
    # OVMF widens each byte of -append to UTF-16 and appends " initrd=initrd" and a NUL.
    options = (SPEC.cmdline + " initrd=initrd\x00").encode("utf-16-le")

    assert tags["LOADED_IMAGE::LoadOptions"].sha384 == hashlib.sha384(options).digest()
    assert tags["Linux initrd"].sha384 == hashlib.sha384(synthetic_initrd("initrd-test")).digest()
    expected = compute_manifest(
        synthetic_kernel("vmlinuz-test"),
        synthetic_initrd("initrd-test"),
        SPEC.cmdline,
        2 << 30,
        builtin_platform(DEFAULT_PLATFORM),
    )
    assert kernel.sha384 == next(
        e.sha384 for e in expected.events if e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION
    )
    assert "vmlinuz-test" in kernel.detail


@pytest.mark.parametrize(
    ("change", "moved"),
    [
        ({"kernel": Component.synthetic("vmlinuz-other")}, [1]),
        ({"initrd": Component.synthetic("initrd-rebuilt")}, [2]),
        ({"cmdline": "console=ttyS0 root=/dev/mapper/root ro quiet"}, [2]),
        # QEMU puts the initrd below the RAM's top under 4 GiB: the patched header moves.
        ({"memory": "1G"}, [0, 1]),
        ({"initrd": None}, [1, 2]),
    ],
)
def test_each_named_component_moves_its_registers(change: dict[str, Any], moved: list[int]) -> None:
    assert _registers_that_differ(SPEC, dataclasses.replace(SPEC, **change)) == moved


def test_the_builtin_profiles_differ_in_the_kernel_only() -> None:
    default, other = Profile.default(), Profile.builtin("other")
    assert default.spec is not None and other.spec is not None

    assert default.spec.kernel != other.spec.kernel
    assert dataclasses.replace(other.spec, kernel=default.spec.kernel) == default.spec
    mine, theirs = (
        parse_event_log(default.event_log() or b""),
        parse_event_log(other.event_log() or b""),
    )
    differing = [a.name for a, b in zip(mine.events, theirs.events, strict=True) if a != b]
    assert differing == ["boot application kernel"]


def test_real_files_measure_like_the_same_bytes_under_a_label(tmp_path: Path) -> None:
    (tmp_path / "vmlinuz").write_bytes(synthetic_kernel("vmlinuz-test"))
    (tmp_path / "initrd.img").write_bytes(synthetic_initrd("initrd-test"))
    (tmp_path / "host.json").write_text(
        json.dumps(builtin_platform(DEFAULT_PLATFORM).to_json()), encoding="utf-8"
    )
    from_files = BootSpec(
        platform=Component.file(tmp_path / "host.json"),
        kernel=Component.file(tmp_path / "vmlinuz"),
        initrd=Component.file(tmp_path / "initrd.img"),
        cmdline=SPEC.cmdline,
        memory="2048M",
    )

    boot = simulate(from_files)

    assert boot.rtmrs == simulate(SPEC).rtmrs
    assert boot.event_log() == simulate(SPEC).event_log()  # details are not in the log
    assert from_files.memory == "2G"
    assert "kernel vmlinuz " in boot.manifest.events[11].detail


def test_a_manifest_boots_as_it_says(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(simulate(SPEC).manifest.to_json()), encoding="utf-8")

    boot = from_manifest(path)

    assert boot.rtmrs == simulate(SPEC).rtmrs
    assert boot.event_log() == simulate(SPEC).event_log()
    assert boot.source.describe() == f"manifest {path}"


def test_a_manifest_whose_registers_are_not_its_replay_is_refused(tmp_path: Path) -> None:
    document = simulate(SPEC).manifest.to_json()
    document["rtmr2"] = "00" * 48
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(document), encoding="utf-8")

    with pytest.raises(MeasuredBootError) as caught:
        from_manifest(path)

    assert caught.value.reason == "manifest_invalid"


def test_what_the_calculator_refuses_keeps_its_reason(tmp_path: Path) -> None:
    (tmp_path / "not-a-kernel").write_bytes(b"\x00" * 8192)
    with pytest.raises(MeasuredBootError) as caught:
        simulate(dataclasses.replace(SPEC, kernel=Component.file(tmp_path / "not-a-kernel")))
    assert caught.value.reason == "setup_header_invalid"

    with pytest.raises(MeasuredBootError) as caught:
        simulate(dataclasses.replace(SPEC, memory="8G"))  # other ACPI tables than captured
    assert caught.value.reason == "platform_profile_invalid"

    with pytest.raises(MeasuredBootError) as caught:
        simulate(dataclasses.replace(SPEC, initrd=Component.file(tmp_path / "absent")))
    assert caught.value.reason == "measured_boot_invalid"
    assert "absent" in caught.value.message


def test_bad_specs_are_refused() -> None:
    with pytest.raises(ProfileError, match="no built-in platform"):
        simulate(BootSpec(Component.builtin("nowhere"), SPEC.kernel, None, "", "2G"))
    with pytest.raises(ProfileError, match="memory"):
        BootSpec(SPEC.platform, SPEC.kernel, None, "", "lots")
    with pytest.raises(ProfileError, match="NUL"):
        BootSpec(SPEC.platform, SPEC.kernel, None, "a\x00b", "2G")
    with pytest.raises(ProfileError, match="kernel"):
        BootSpec(SPEC.platform, Component.builtin("x"), None, "", "2G")
    with pytest.raises(ProfileError, match=r"boot\.kernel"):
        BootSpec.from_json({"kernel": "vmlinuz", "cmdline": "", "memory": "2G"})
    with pytest.raises(ProfileError, match="lacks"):
        BootSpec.from_json({"kernel": {"synthetic": "k"}})
    with pytest.raises(ProfileError, match="unknown boot field"):
        BootSpec.from_json({"kernel": {"synthetic": "k"}, "cmdline": "", "memory": "2G", "x": 1})
