"""The tdxsim command, through main() and through the installed console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tdx_boot_attest.tdxsim import abi, tcb
from tdx_boot_attest.tdxsim.cli import main
from tdx_boot_attest.tdxsim.measured_boot import Component
from tdx_boot_attest.tdxsim.profile import Profile
from tdx_boot_attest.tdxsim.state import SimState
from tdx_boot_attest.tdxsim.synthetic import synthetic_kernel
from tests.support.dcap import refusal, verify

REPORT_HEX = "5a" * 64


def _now() -> int:
    import time

    return int(time.time())


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    assert main(["init", str(path), "--seed", "3"]) == 0
    return path


def test_init_then_quote_verifies(state_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "quote.bin"

    code = main(
        ["quote", "--state", str(state_dir), "--report-data", REPORT_HEX, "--out", str(out)]
    )

    state = SimState.load(state_dir)
    assert code == 0
    assert state.seed == 3
    assert (state_dir / "root_ca.der").read_bytes() == state.root_ca_der
    report = verify(out.read_bytes(), state.collateral_json, state.root_ca_der, _now())
    assert report.status == "UpToDate"
    assert abi.parse_tdx_quote(out.read_bytes()).td_report.report_data.hex() == REPORT_HEX


def test_quote_options_reach_the_quote(state_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "quote.bin"
    profile_path = tmp_path / "p.json"
    Profile.builtin("other").save(profile_path)

    code = main(
        [
            "quote", "--state", str(state_dir), "--report-data", REPORT_HEX,
            "--profile", str(profile_path), "--mrtd", "aa" * 48, "--rtmr", "2=" + "bb" * 48,
            "--quote-version", "5", "--body", "1.0", "--debug", "--out", str(out),
        ]
    )  # fmt: skip

    quote = abi.parse_tdx_quote(out.read_bytes())
    body = quote.td_report
    assert code == 0
    assert (quote.header.version, quote.body_type) == (5, abi.BODY_TD_REPORT10)
    assert body.mr_td == bytes([0xAA]) * 48
    assert body.rtmr2 == bytes([0xBB]) * 48
    assert body.rtmr1.hex() == Profile.builtin("other").rtmr1
    assert body.debug


def test_builtin_profile_by_name(state_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "q"

    assert main(["quote", "--state", str(state_dir), "--report-data", REPORT_HEX,
                 "--profile", "other", "--out", str(out)]) == 0  # fmt: skip

    assert abi.parse_tdx_quote(out.read_bytes()).td_report.rtmr1.hex() == (
        Profile.builtin("other").rtmr1
    )


def test_revoke_then_quote_is_refused(state_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "q"
    main(["quote", "--state", str(state_dir), "--report-data", REPORT_HEX, "--out", str(out)])

    assert main(["revoke", "--state", str(state_dir)]) == 0

    state = SimState.load(state_dir)
    assert "CertRevoked" in refusal(
        out.read_bytes(), state.collateral_json, state.root_ca_der, _now()
    )
    assert main(["revoke", "--state", str(state_dir), "--undo"]) == 0
    state = SimState.load(state_dir)
    assert verify(out.read_bytes(), state.collateral_json, state.root_ca_der, _now())


def test_platform_and_collateral_commands(state_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "q"
    exported = tmp_path / "collateral.json"

    assert main(["platform", "--state", str(state_dir), "--set", "configneeded"]) == 0
    assert main(["collateral", "--state", str(state_dir), "--status",
                 "configneeded=SWHardeningNeeded", "--advisories", "configneeded=INTEL-SA-00001",
                 "--valid-days", "31", "--out", str(exported)]) == 0  # fmt: skip
    assert main(["quote", "--state", str(state_dir), "--report-data", REPORT_HEX,
                 "--out", str(out)]) == 0  # fmt: skip

    state = SimState.load(state_dir)
    report = verify(out.read_bytes(), exported.read_text(), state.root_ca_der, _now())
    assert state.platform_tcb == "configneeded"
    assert (report.status, report.advisory_ids) == ("SWHardeningNeeded", ["INTEL-SA-00001"])
    assert exported.read_text() == state.collateral_json


def test_profile_new_changes_named_components(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(synthetic_kernel("vmlinuz-7"))
    out = tmp_path / "new.json"

    assert main(["profile", "new", "--kernel", str(kernel), "--initrd-label", "initrd-7",
                 "--cmdline", "console=ttyS0", "--out", str(out)]) == 0  # fmt: skip
    assert main(["profile", "show", str(out)]) == 0

    profile = Profile.load(out)
    printed = capsys.readouterr().out
    assert profile.name == "new"
    assert profile.spec is not None
    assert profile.spec.kernel == Component.file(str(kernel))
    assert profile.spec.initrd == Component.synthetic("initrd-7")
    assert profile.spec.memory == Profile.default().spec.memory  # type: ignore[union-attr]
    assert Profile.loads(printed.split("\n", 1)[1]) == profile
    assert profile.mrtd == Profile.default().mrtd
    assert profile.rtmr0 == Profile.default().rtmr0
    assert profile.rtmr1 != Profile.default().rtmr1

    assert main(["profile", "new", "--base", str(out), "--no-initrd", "--out", "-"]) == 0
    assert Profile.loads(capsys.readouterr().out).spec.initrd is None  # type: ignore[union-attr]


def test_profile_new_refuses_a_base_without_components(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = tmp_path / "raw.json"
    Profile.default().with_rtmr(1, "ab" * 48).save(raw)

    assert main(["profile", "new", "--base", str(raw), "--out", "-"]) == 1
    assert main(["profile", "new", "--memory", "8G", "--out", "-"]) == 1

    errors = capsys.readouterr().err.splitlines()
    assert errors[0].startswith("tdxsim: error: profile_invalid: ")
    assert errors[1].startswith("tdxsim: error: platform_profile_invalid: ")


def test_profile_inputs_measure_to_the_same_registers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tdx_boot_attest.agent.measurement.manifest import compute_manifest
    from tdx_boot_attest.agent.measurement.memory import parse_memory_size
    from tdx_boot_attest.agent.measurement.platform import PlatformProfile

    assert main(["profile", "inputs", "other", "--out-dir", str(tmp_path)]) == 0

    printed = capsys.readouterr().out
    assert "tdx-attest-server image measure --kernel" in printed
    spec = Profile.builtin("other").spec
    assert spec is not None
    manifest = compute_manifest(
        (tmp_path / "vmlinuz-6.1.0-21-amd64").read_bytes(),
        (tmp_path / "initrd.img-6.1.0-18-amd64").read_bytes(),
        (tmp_path / "cmdline").read_text().removesuffix("\n"),
        parse_memory_size(spec.memory),
        PlatformProfile.from_json(json.loads((tmp_path / "platform-qemu-tdvf.json").read_text())),
    )
    assert [value.hex() for value in manifest.rtmrs] == list(Profile.builtin("other").rtmrs)
    assert manifest.mrtd.hex() == Profile.builtin("other").mrtd


def test_profile_inputs_never_write_outside_the_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = tmp_path / "odd.json"
    odd = Profile.default().with_components(
        kernel=Component.synthetic("../escaped"), initrd=Component.synthetic("../escaped")
    )
    odd.save(profile)
    folder = tmp_path / "inputs"

    assert main(["profile", "inputs", str(profile), "--out-dir", str(folder)]) == 0

    assert sorted(p.name for p in folder.iterdir()) == [
        "cmdline", "initrd.img", "platform-qemu-tdvf.json", "vmlinuz",
    ]  # fmt: skip
    assert not (tmp_path / "escaped").exists()
    assert (folder / "vmlinuz").read_bytes() == synthetic_kernel("../escaped")


def test_eventlog_lists_writes_and_prints_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ccel"

    assert main(["eventlog", "--profile", "other", "--out", str(out)]) == 0
    listing = capsys.readouterr().out
    assert main(["eventlog", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)

    other = Profile.builtin("other")
    assert out.read_bytes() == other.event_log()
    assert "boot application kernel" in listing
    assert "kernel vmlinuz-6.1.0-21-amd64" in listing
    assert f"RTMR1  {other.rtmr1}" in listing
    default = Profile.default()
    assert [document[f"rtmr{n}"] for n in range(4)] == list(default.rtmrs)
    assert document["mrtd"] == default.mrtd
    assert [e["name"] for e in document["events"]][-4:] == [
        '"LOADED_IMAGE::LoadOptions"', '"Linux initrd"',
        'EFI action "Exit Boot Services Invocation"',
        'EFI action "Exit Boot Services Returned with Success"',
    ]  # fmt: skip
    assert document["event_log_bytes"] == len(default.event_log() or b"")


def test_eventlog_of_a_manifest_and_of_raw_registers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(Profile.builtin("other").boot.manifest.to_json()))  # type: ignore[union-attr]
    raw = tmp_path / "raw.json"
    Profile.default().with_rtmr(2, "cd" * 48).save(raw)

    assert main(["eventlog", "--manifest", str(manifest), "--out", str(tmp_path / "m")]) == 0
    assert main(["eventlog", "--profile", str(raw)]) == 1

    assert (tmp_path / "m").read_bytes() == Profile.builtin("other").event_log()
    assert "tdxsim: error: profile_invalid: " in capsys.readouterr().err


def test_quote_with_a_manifest_carries_its_registers(state_dir: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(Profile.builtin("other").boot.manifest.to_json()))  # type: ignore[union-attr]
    out = tmp_path / "q"

    assert main(["quote", "--state", str(state_dir), "--report-data", REPORT_HEX,
                 "--manifest", str(manifest), "--out", str(out)]) == 0  # fmt: skip

    body = abi.parse_tdx_quote(out.read_bytes()).td_report
    assert [value.hex() for value in body.rtmrs] == list(Profile.builtin("other").rtmrs)


def test_inspect_prints_measurements(
    state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "q"
    main(["quote", "--state", str(state_dir), "--report-data", REPORT_HEX, "--out", str(out)])
    capsys.readouterr()

    assert main(["inspect", str(out)]) == 0

    fields = json.loads(capsys.readouterr().out)
    assert fields["tdx"] is True
    assert fields["rtmr1"] == Profile.default().rtmr1
    assert fields["report_data"] == REPORT_HEX


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["quote", "--state", "{missing}", "--report-data", REPORT_HEX, "--out", "{tmp}/q"],
         "state_invalid"),
        (["quote", "--state", "{state}", "--report-data", REPORT_HEX, "--profile",
          "{tmp}/none.json", "--out", "{tmp}/q"], "profile_invalid"),
        (["init", "{state}"], "state_invalid"),
        (["eventlog", "--manifest", "{tmp}/absent.json"], "measured_boot_invalid"),
        (["collateral", "--state", "{state}", "--status", "nolevel=Revoked"],
         "collateral_invalid"),
        (["collateral", "--state", "{state}", "--status", "uptodate=Fine"],
         "collateral_invalid"),
    ],
    ids=["no-state", "no-profile", "init-twice", "no-manifest", "no-level", "bad-status"],
)  # fmt: skip
def test_refusals_print_the_reason_and_exit_1(
    state_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    reason: str,
) -> None:
    args = [a.format(missing=tmp_path / "missing", tmp=tmp_path, state=state_dir) for a in argv]

    code = main(args)

    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"tdxsim: error: {reason}: ")
    assert "Traceback" not in err


def test_verbose_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--verbose", "show", "--state", str(tmp_path / "missing")])

    assert code == 1
    assert "Traceback" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["quote", "--state", "x", "--report-data", "abcd", "--out", "q"])

    assert caught.value.code == 2
    assert "64 bytes" in capsys.readouterr().err


def test_console_script_init_and_quote(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "tdxsim"
    state = tmp_path / "s"
    out = tmp_path / "q"

    init = subprocess.run([str(script), "init", str(state), "--seed", "11"],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    made = subprocess.run(
        [str(script), "quote", "--state", str(state), "--report-data", REPORT_HEX,
         "--quote-version", "5", "--out", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    missing = subprocess.run([str(script), "show", "--state", str(tmp_path / "nothing")],
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip

    assert init.returncode == 0, init.stderr
    assert made.returncode == 0, made.stderr
    loaded = SimState.load(state)
    assert verify(out.read_bytes(), loaded.collateral_json, loaded.root_ca_der, _now()).status == (
        "UpToDate"
    )
    assert missing.returncode == 1
    assert missing.stderr.startswith("tdxsim: error: state_invalid: ")


def test_python_dash_m_runs_the_same_cli(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tdx_boot_attest.tdxsim", "profile", "show", "other"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert Profile.loads(result.stdout) == Profile.builtin("other")


def test_presets_listed_by_platform_command(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["platform", "--state", str(state_dir)]) == 0

    printed = capsys.readouterr().out
    assert [line.split()[1] if line.startswith("*") else line.split()[0]
            for line in printed.splitlines()] == list(tcb.PRESETS)  # fmt: skip
    assert printed.startswith("* uptodate")


def test_custom_tcb_options(state_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "q"

    tee_tcb_svn = "060103" + "00" * 13
    code = main(["quote", "--state", str(state_dir), "--report-data", REPORT_HEX,
                 "--pcesvn", "12", "--tee-tcb-svn", tee_tcb_svn, "--out", str(out)])  # fmt: skip

    state = SimState.load(state_dir)
    report = verify(out.read_bytes(), state.collateral_json, state.root_ca_der, _now())
    assert code == 0
    assert report.status == "ConfigurationNeeded"
    assert abi.parse_tdx_quote(out.read_bytes()).td_report.tee_tcb_svn.hex() == tee_tcb_svn


def test_optional_subcommands_absent_or_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from tdx_boot_attest.tdxsim.cli import _register_optional

    (tmp_path / "broken_sim_plugin.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    parser = argparse.ArgumentParser(prog="t")
    sub = parser.add_subparsers(dest="command")

    _register_optional(sub, "tdxsim.no_such_module", "add_parser", "absent")
    _register_optional(sub, "broken_sim_plugin", "add_parser", "broken")

    assert "absent" not in sub.choices
    args = parser.parse_args(["broken"])
    with pytest.raises(Exception, match="no_such_dependency_xyz") as caught:
        args.func(args)
    assert getattr(caught.value, "reason", None) == "state_invalid"


@pytest.mark.parametrize("command", ["mount", "pcs"])
def test_mount_and_pcs_subcommands_are_registered(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main([command, "--help"])

    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: tdxsim {command}")
    assert "unavailable" not in out


def test_the_parser_has_version(capsys: pytest.CaptureFixture[str]) -> None:
    from tdx_boot_attest.agent import package_info
    from tdx_boot_attest.tdxsim.cli import build_parser

    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--version"])
    assert exited.value.code == 0
    assert f" {package_info.version()} (Python " in capsys.readouterr().out
