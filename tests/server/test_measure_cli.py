"""``tdx-attest-server image measure`` and ``platform capture``: no database, no master key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tdx_boot_attest.agent.eventlog import parse_event_log
from tdx_boot_attest.agent.measurement.manifest import Manifest
from tdx_boot_attest.agent.measurement.platform import PlatformProfile
from tdx_boot_attest.server.cli import main
from tdx_boot_attest.tdxsim.profile import Profile
from tdx_boot_attest.tdxsim.state import SimState
from tests.agent.measurement.builders import ASSETS, bzimage

INITRD_LOG = ASSETS / "qemu-direct-boot-initrd.ccel"


@pytest.fixture(autouse=True)
def no_server_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The commands must work with no configuration, database or master key at all."""
    for name in ("TDX_ATTEST_CONFIG", "TDX_ATTEST_DATABASE_URL", "TDX_ATTEST_MASTER_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def reference_quote(sim: SimState, tmp_path: Path, log: Path = INITRD_LOG) -> Path:
    """A quote whose RTMRs are the replay of ``log``: a reference boot on the simulator."""
    rtmrs = parse_event_log(log.read_bytes()).replay()
    profile = Profile(
        name="reference",
        mrtd="ab" * 48,
        rtmr0=rtmrs[0].hex(),
        rtmr1=rtmrs[1].hex(),
        rtmr2=rtmrs[2].hex(),
        rtmr3=rtmrs[3].hex(),
    )
    path = tmp_path / "reference.quote"
    path.write_bytes(sim.make_quote(bytes(64), profile))
    return path


def capture(sim: SimState, tmp_path: Path) -> Path:
    out = tmp_path / "platform.json"
    quote = reference_quote(sim, tmp_path)
    assert main(["platform", "capture", "qemu-2g", "--from-quote", str(quote),
                 "--event-log", str(INITRD_LOG), "--out", str(out)]) == 0  # fmt: skip
    return out


def test_capture_writes_a_profile(
    sim: SimState, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = capture(sim, tmp_path)
    profile = PlatformProfile.from_json(json.loads(out.read_text()))
    assert profile.name == "qemu-2g"
    assert profile.mrtd == bytes.fromhex("ab" * 48)
    assert profile.td_hob.memory_bytes == 2 * 1024**3
    assert "captured platform qemu-2g" in capsys.readouterr().out


def test_capture_refuses_a_log_from_another_boot_naming_the_registers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["platform", "capture", "x",
                   "--from-quote", str(ASSETS / "gce-cos113.quote"),
                   "--event-log", str(ASSETS / "qemu-direct-boot.ccel"),
                   "--out", str(tmp_path / "p.json")])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 1
    assert "reference_mismatch" in err
    assert "RTMR0" in err and "RTMR3" not in err
    assert not (tmp_path / "p.json").exists()


def test_capture_refuses_the_real_gce_pair_as_not_a_direct_boot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["platform", "capture", "gce",
                   "--from-quote", str(ASSETS / "gce-cos113.quote"),
                   "--event-log", str(ASSETS / "gce-cos113.ccel"),
                   "--out", str(tmp_path / "p.json")])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 1
    assert "boot_path_unsupported" in err and "BOOTX64.EFI" in err
    assert "Traceback" not in err


def test_measure_writes_a_manifest_and_prints_a_summary(
    sim: SimState, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    platform = capture(sim, tmp_path)
    (tmp_path / "vmlinuz").write_bytes(bzimage())
    (tmp_path / "initrd.img").write_bytes(b"070701" + bytes(100))
    (tmp_path / "cmdline").write_text("console=ttyS0 root=/dev/vda\n")
    capsys.readouterr()
    status = main(["image", "measure", "--kernel", "vmlinuz", "--initrd", "initrd.img",
                   "--cmdline-file", "cmdline", "--memory", "2048M",
                   "--platform-file", str(platform), "--out", "manifest.json"])  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0
    manifest = Manifest.from_json(json.loads((tmp_path / "manifest.json").read_text()))
    assert manifest.cmdline == "console=ttyS0 root=/dev/vda"
    assert manifest.kernel.name == "vmlinuz"
    assert manifest.memory_bytes == 2 * 1024**3
    assert f"RTMR2 {manifest.rtmrs[2].hex()}" in out
    assert "initrd initrd.img" in out
    assert "command line 'console=ttyS0 root=/dev/vda initrd=initrd'" in out


def test_measure_json_prints_the_manifest(
    sim: SimState, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    platform = capture(sim, tmp_path)
    (tmp_path / "vmlinuz").write_bytes(bzimage())
    capsys.readouterr()
    assert main(["image", "measure", "--kernel", "vmlinuz", "--cmdline", "ro",
                 "--memory", "1G", "--platform-file", str(platform), "--json"]) == 0  # fmt: skip
    document = json.loads(capsys.readouterr().out)
    assert document["format"] == "tdx-boot-attest/measurement-manifest"
    assert document["inputs"]["initrd"] is None


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (["--memory", "lots"], "memory_size_invalid"),
        (["--memory", "8G"], "platform_profile_invalid"),
        (["--memory", "2G", "--kernel", "bad-kernel"], "setup_header_invalid"),
    ],
)
def test_measure_refusals_print_a_reason_and_no_traceback(
    sim: SimState,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    reason: str,
) -> None:
    platform = capture(sim, tmp_path)
    (tmp_path / "vmlinuz").write_bytes(bzimage())
    (tmp_path / "bad-kernel").write_bytes(b"x" * 10000)
    capsys.readouterr()
    argv = ["image", "measure", "--kernel", "vmlinuz", "--cmdline", "ro",
            "--platform-file", str(platform), "--out", "m.json", *extra]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert reason in err and "Traceback" not in err
    assert not (tmp_path / "m.json").exists()


def test_measure_refuses_a_profile_of_another_version(
    sim: SimState, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    platform = capture(sim, tmp_path)
    document = json.loads(platform.read_text())
    document["version"] = 7
    platform.write_text(json.dumps(document))
    (tmp_path / "vmlinuz").write_bytes(bzimage())
    assert main(["image", "measure", "--kernel", "vmlinuz", "--cmdline", "",
                 "--memory", "2G", "--platform-file", str(platform)]) == 1  # fmt: skip
    assert "version 7 is not supported" in capsys.readouterr().err


def test_missing_files_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["image", "measure", "--kernel", "nothere", "--cmdline", "",
                 "--memory", "2G", "--platform-file", "nope.json"]) == 1  # fmt: skip
    assert "nope.json" in capsys.readouterr().err
