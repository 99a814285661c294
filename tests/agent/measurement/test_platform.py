"""Platform profiles: capture from a reference boot, the JSON form, refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tdx_boot_attest.agent.eventlog import (
    EV_EFI_ACTION,
    computed_event,
    encode_event_log,
    parse_event_log,
)
from tdx_boot_attest.agent.measurement.errors import (
    PlatformProfileError,
    ReferenceMismatchError,
    UnsupportedBootError,
)
from tdx_boot_attest.agent.measurement.memory import GIB, MIB
from tdx_boot_attest.agent.measurement.platform import (
    PROFILE_VERSION,
    ROLE_FIRMWARE,
    ROLE_KERNEL,
    ROLE_LINUX_STUB,
    ROLE_TD_HOB,
    PlatformProfile,
    QemuLoader,
    capture_platform,
)
from tdx_boot_attest.agent.measurement.tdvf import PAGE_ORDER_PER_PAGE, compute_mrtd
from tests.agent.measurement.builders import ASSETS, tdvf_firmware

INITRD_LOG = (ASSETS / "qemu-direct-boot-initrd.ccel").read_bytes()
PLAIN_LOG = (ASSETS / "qemu-direct-boot.ccel").read_bytes()
MRTD = bytes(range(48))


def capture(log: bytes = INITRD_LOG, **options: Any) -> PlatformProfile:
    return capture_platform(
        "host-a", mrtd=MRTD, rtmrs=parse_event_log(log).replay(), event_log=log, **options
    )


def test_capture_finds_the_memory_size_and_keeps_the_firmware_events() -> None:
    profile = capture()
    assert profile.td_hob.memory_bytes == 2 * GIB
    assert profile.td_hob.source == "edk2-ovmf"
    assert profile.mrtd == MRTD and profile.mrtd_source == "quote"
    roles = [item.role for item in profile.events]
    assert roles[0] == ROLE_TD_HOB
    assert roles.count(ROLE_KERNEL) == 1
    assert roles.count(ROLE_LINUX_STUB) == 2
    assert roles.count(ROLE_FIRMWARE) == 16
    assert capture(PLAIN_LOG).td_hob.memory_bytes == 8 * GIB


def test_json_round_trip_and_digest() -> None:
    profile = capture(qemu=QemuLoader(kernel_header="unmodified"))
    document = json.loads(json.dumps(profile.to_json()))
    assert document["format"] == "tdx-boot-attest/platform-profile"
    assert document["version"] == PROFILE_VERSION
    again = PlatformProfile.from_json(document)
    assert again == profile
    assert again.digest() == profile.digest()
    assert capture().digest() != profile.digest()


def test_a_log_that_is_not_the_quotes_names_the_register() -> None:
    rtmrs = list(parse_event_log(INITRD_LOG).replay())
    rtmrs[2] = bytes(48)
    with pytest.raises(ReferenceMismatchError, match=r"RTMR2 \(quote 0000") as caught:
        capture_platform("h", mrtd=MRTD, rtmrs=rtmrs, event_log=INITRD_LOG)
    assert "RTMR0" not in str(caught.value)
    assert caught.value.reason == "reference_mismatch"


def test_a_shim_grub_boot_is_not_a_direct_boot() -> None:
    log = (ASSETS / "gce-cos113.ccel").read_bytes()
    with pytest.raises(UnsupportedBootError, match=r"BOOTX64\.EFI"):
        capture(log)


def test_a_digest_that_contradicts_its_data_is_refused() -> None:
    events = list(parse_event_log(INITRD_LOG).events)
    action = next(e for e in events if e.event_type == EV_EFI_ACTION)
    forged = computed_event(action.mr_index, EV_EFI_ACTION, b"something else", action.sha384)
    events[events.index(action)] = forged
    log = encode_event_log(events)
    with pytest.raises(ReferenceMismatchError, match="does not match its own data"):
        capture(log)


def test_an_unknown_td_hob_layout_is_pinned_to_the_given_size() -> None:
    events = list(parse_event_log(INITRD_LOG).events)
    events[0] = computed_event(events[0].mr_index, events[0].event_type, events[0].data, bytes(48))
    log = encode_event_log(events)
    with pytest.raises(PlatformProfileError, match="--memory"):
        capture(log)
    profile = capture(log, memory_bytes=2 * GIB)
    assert profile.td_hob.source == "pinned"
    assert profile.td_hob.digest_for(2 * GIB) == bytes(48)
    with pytest.raises(PlatformProfileError, match="pins the TD HOB digest to 2G"):
        profile.td_hob.digest_for(1 * GIB)
    assert PlatformProfile.from_json(profile.to_json()) == profile


def test_firmware_gives_mrtd_and_layout_and_must_match() -> None:
    bfv = bytes(0x1000)
    sections = [
        (0, 0x1000, 0xFFFFF000, 0x1000, 0, 1),
        (0, 0, 0x800000, 0x6000, 3, 0),
        (0, 0, 0x809000, 0x2000, 2, 0),
        (0, 0, 0x80B000, 0x2000, 3, 0),
        (0, 0, 0x810000, 0x10000, 3, 0),
    ]
    firmware = tdvf_firmware(sections, bfv)
    mrtd = compute_mrtd(firmware, PAGE_ORDER_PER_PAGE)
    rtmrs = parse_event_log(INITRD_LOG).replay()
    profile = capture_platform("h", mrtd=mrtd, rtmrs=rtmrs, event_log=INITRD_LOG, firmware=firmware)
    assert profile.mrtd_source == "firmware (single-pass)"
    assert profile.td_hob.source == "firmware"
    assert profile.firmware_sha384 is not None
    with pytest.raises(ReferenceMismatchError, match="MRTD"):
        capture_platform("h", mrtd=MRTD, rtmrs=rtmrs, event_log=INITRD_LOG, firmware=firmware)
    other = tdvf_firmware([*sections[:1], (0, 0, 0x809000, 0x2000, 2, 0)], bfv)
    with pytest.raises(ReferenceMismatchError, match="TD HOB"):
        capture_platform(
            "h", mrtd=compute_mrtd(other, PAGE_ORDER_PER_PAGE), rtmrs=rtmrs,
            event_log=INITRD_LOG, firmware=other,
        )  # fmt: skip


def _mutated(path: str, value: Any) -> dict[str, Any]:
    document = capture().to_json()
    target = document
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return document


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        ("version", 2, "version 2 is not supported"),
        ("format", "other", "format"),
        ("name", "", "platform name"),
        ("mrtd", "zz" * 48, "mrtd"),
        ("td_hob.source", "guess", "source"),
        ("td_hob.memory_bytes", 12345, "memory_bytes"),
        ("td_hob.sha384", "00" * 48, "does not give the captured digest"),
        ("td_hob.accepted_ranges", [[1]], "accepted_ranges"),
        ("qemu.kernel_header", "maybe", "kernel_header"),
        ("qemu.initrd_max", "anything", "initrd_max"),
        ("qemu.machine", "pc", "q35"),
        ("qemu.acpi_data_size", -1, "acpi_data_size"),
        ("events", [], "events"),
        ("events", _DELETE, "events"),
    ],
)
def test_malformed_profiles_are_refused(path: str, value: Any, words: str) -> None:
    with pytest.raises(PlatformProfileError, match=words) as caught:
        PlatformProfile.from_json(_mutated(path, value))
    assert caught.value.reason == "platform_profile_invalid"


def test_malformed_events_are_refused() -> None:
    document = capture().to_json()
    document["events"][3]["role"] = "mystery"
    with pytest.raises(PlatformProfileError, match="role"):
        PlatformProfile.from_json(document)
    document = capture().to_json()
    document["events"][3]["sha384"] = "00"
    with pytest.raises(PlatformProfileError, match="sha384"):
        PlatformProfile.from_json(document)
    document = capture().to_json()
    document["events"] = [e for e in document["events"] if e["role"] != "kernel"]
    with pytest.raises(PlatformProfileError, match="one td_hob and one kernel"):
        PlatformProfile.from_json(document)


def test_memory_sizes_searched_are_whole_256_mib_steps() -> None:
    profile = capture()
    assert profile.td_hob.memory_bytes % (256 * MIB) == 0
