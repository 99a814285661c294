"""compute_manifest and the manifest's JSON form."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest

from tdx_boot_attest.agent.eventlog import EV_EFI_BOOT_SERVICES_APPLICATION, parse_event_log, replay
from tdx_boot_attest.agent.measurement.efi import load_options
from tdx_boot_attest.agent.measurement.errors import (
    ManifestError,
    MeasurementError,
    PeFormatError,
    PlatformProfileError,
    SetupHeaderError,
)
from tdx_boot_attest.agent.measurement.linux_boot import INITRD_MAX_HEADER, qemu_patched_kernel
from tdx_boot_attest.agent.measurement.manifest import MANIFEST_VERSION, Manifest, compute_manifest
from tdx_boot_attest.agent.measurement.memory import GIB, MIB
from tdx_boot_attest.agent.measurement.pe import authenticode_digest
from tdx_boot_attest.agent.measurement.platform import QemuLoader, capture_platform
from tests.agent.measurement.builders import ASSETS, bzimage

INITRD_LOG = (ASSETS / "qemu-direct-boot-initrd.ccel").read_bytes()
PLAIN_LOG = (ASSETS / "qemu-direct-boot.ccel").read_bytes()
KERNEL = bzimage()
INITRD = b"070701" + bytes(5000)


def platform(log: bytes = INITRD_LOG, header: str = "patched") -> Any:
    return capture_platform(
        "host-a", mrtd=bytes(48), rtmrs=parse_event_log(log).replay(), event_log=log,
        qemu=QemuLoader(kernel_header=header),
    )  # fmt: skip


def test_manifest_events_and_registers() -> None:
    manifest = compute_manifest(KERNEL, INITRD, "console=ttyS0 ro", 2 * GIB, platform())
    reference = parse_event_log(INITRD_LOG)
    assert manifest.rtmrs[0] == reference.replay()[0]  # same platform, same memory size
    assert manifest.rtmrs[3] == bytes(48)
    assert manifest.rtmrs == replay(manifest.events)
    kernel = manifest.events_for(1)[0]
    patched = qemu_patched_kernel(
        KERNEL, b"console=ttyS0 ro", len(INITRD), below_4g_bytes=2 * GIB,
        acpi_data_size=0x28000, rule=INITRD_MAX_HEADER,
    )  # fmt: skip
    assert kernel.event_type == EV_EFI_BOOT_SERVICES_APPLICATION
    assert kernel.sha384 == authenticode_digest(patched)
    assert kernel.name == "boot application kernel"
    cmdline, initrd = manifest.events_for(2)
    options = "console=ttyS0 ro initrd=initrd\0".encode("utf-16-le")
    assert cmdline.sha384 == hashlib.sha384(options).digest()
    assert cmdline.detail == "command line 'console=ttyS0 ro initrd=initrd'"
    assert initrd.sha384 == hashlib.sha384(INITRD).digest()
    assert initrd.name == '"Linux initrd"'
    assert [e.index for e in manifest.events] == list(range(len(manifest.events)))
    assert manifest.kernel.sha384 == hashlib.sha384(KERNEL).digest()


def test_unmodified_header_measures_the_file_as_it_is() -> None:
    manifest = compute_manifest(KERNEL, INITRD, "ro", 2 * GIB, platform(header="unmodified"))
    assert manifest.events_for(1)[0].sha384 == authenticode_digest(KERNEL)
    assert manifest.kernel_header == "unmodified"


def test_without_initrd_and_command_line_the_stub_measures_nothing() -> None:
    manifest = compute_manifest(KERNEL, None, "", 2 * GIB, platform())
    assert manifest.events_for(2) == ()
    assert manifest.rtmrs[2] == bytes(48)
    only_initrd = compute_manifest(KERNEL, INITRD, "", 2 * GIB, platform())
    assert (
        only_initrd.events_for(2)[0].sha384
        == hashlib.sha384(" initrd=initrd\0".encode("utf-16-le")).digest()
    )


def test_an_empty_initrd_is_offered_to_neither_the_command_line_nor_the_stub() -> None:
    manifest = compute_manifest(KERNEL, b"", "ro", 2 * GIB, platform())
    (cmdline,) = manifest.events_for(2)
    assert cmdline.sha384 == hashlib.sha384("ro\0".encode("utf-16-le")).digest()
    assert manifest.initrd is not None and manifest.initrd.size == 0


def test_the_stub_events_go_where_the_reference_had_none() -> None:
    manifest = compute_manifest(KERNEL, INITRD, "ro", 8 * GIB, platform(PLAIN_LOG))
    names = [e.name for e in manifest.events]
    assert names.index('"Linux initrd"') < names.index('EFI action "Exit Boot Services Invocation"')


def test_non_ascii_command_lines_are_widened_byte_by_byte() -> None:
    assert load_options("é".encode(), with_initrd=False) == b"\xc3\x00\xa9\x00\x00\x00"
    manifest = compute_manifest(KERNEL, None, "root=é", 2 * GIB, platform())
    assert (
        manifest.events_for(2)[0].sha384
        == hashlib.sha384(b"r\0o\0o\0t\0=\0\xc3\0\xa9\0\0\0").digest()
    )


def test_another_memory_size_in_the_same_acpi_class_recomputes_the_td_hob() -> None:
    reference = parse_event_log(INITRD_LOG)
    manifest = compute_manifest(KERNEL, INITRD, "ro", 1 * GIB, platform())
    assert manifest.events[0].sha384 != reference.events[0].sha384
    assert [e.sha384 for e in manifest.events[1:11]] == [e.sha384 for e in reference.events[1:11]]
    with pytest.raises(PlatformProfileError, match="ACPI tables"):
        compute_manifest(KERNEL, INITRD, "ro", 4 * GIB, platform())


@pytest.mark.parametrize(
    ("kernel", "initrd", "cmdline", "memory", "error"),
    [
        (b"not a kernel" * 1000, None, "", 2 * GIB, SetupHeaderError),
        (b"\0" * 0x202 + b"HdrS" + bytes(0x2000), None, "", 2 * GIB, PeFormatError),
        (KERNEL, None, "a\0b", 2 * GIB, MeasurementError),
        (KERNEL, None, "", 3 * MIB, MeasurementError),
        (KERNEL, bytes(64 * MIB), "", 64 * MIB, SetupHeaderError),
    ],
)
def test_bad_inputs_raise_typed_errors(
    kernel: bytes, initrd: bytes | None, cmdline: str, memory: int, error: type[Exception]
) -> None:
    with pytest.raises(error):
        compute_manifest(kernel, initrd, cmdline, memory, platform())


def test_json_round_trip() -> None:
    manifest = compute_manifest(
        KERNEL, INITRD, "ro quiet", 2 * GIB, platform(), kernel_name="vmlinuz-6.1",
        initrd_name="initrd.img",
    )  # fmt: skip
    document = json.loads(json.dumps(manifest.to_json()))
    assert document["format"] == "tdx-boot-attest/measurement-manifest"
    assert document["version"] == MANIFEST_VERSION
    assert document["inputs"]["kernel"]["file"] == "vmlinuz-6.1"
    assert document["events"]["rtmr2"][1]["detail"] == "initrd initrd.img"
    assert len(document["rtmr1"]) == 96
    assert Manifest.from_json(document) == manifest


def _broken(change: Any) -> dict[str, Any]:
    document = compute_manifest(KERNEL, INITRD, "ro", 2 * GIB, platform()).to_json()
    broken = copy.deepcopy(document)
    change(broken)
    return broken


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d.update(version=2), "version 2 is not supported"),
        (lambda d: d.update(format="x"), "format"),
        (lambda d: d.update(rtmr1="00" * 48), "rtmr1.*replay"),
        (lambda d: d.update(rtmr2="AB" * 48), "lowercase hex"),
        (lambda d: d["events"]["rtmr2"][1].update(sha384="11" * 48), "rtmr2.*replay"),
        (lambda d: d["events"]["rtmr1"][0].update(sequence=999), "without gaps"),
        (lambda d: d["events"].pop("rtmr3"), "keys"),
        (lambda d: d["events"]["rtmr0"][0].update(mr_index=3), "another register"),
        (lambda d: d["inputs"]["cmdline"].update(text="rw"), "cmdline.sha384"),
        (lambda d: d["inputs"]["kernel"].update(bytes=-1), "bytes"),
        (lambda d: d.update(memory_bytes="2G"), "memory_bytes"),
        (lambda d: d.update(kernel_header="?"), "kernel_header"),
        (lambda d: d.pop("platform"), "platform"),
    ],
)
def test_malformed_manifests_are_refused(change: Any, words: str) -> None:
    with pytest.raises(ManifestError, match=words) as caught:
        Manifest.from_json(_broken(change))
    assert caught.value.reason == "manifest_invalid"
