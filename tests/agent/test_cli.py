"""agent.cli in process: subcommands, exit codes, console lines, failure actions.

The TSM is tdxsim's directory fake (patched in for the os file operations); the
server is a scripted HTTP server that seals the passphrase like the real one.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tdx_boot_attest.agent import protocol
from tdx_boot_attest.agent.cli import main
from tdx_boot_attest.agent.eventlog import parse_event_log
from tdx_boot_attest.agent.identity import load_identity
from tdx_boot_attest.tdxsim.tsm.dirfake import DirFake
from tdx_boot_attest.tdxsim.tsm.model import TsmModel
from tests.agent.test_http_client import PASSPHRASE, nonce_answer, refusal, release
from tests.support.scripted_http import ScriptedServer


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    with scripted.running():
        yield scripted


@pytest.fixture
def fake_tsm(tsm_fake: DirFake, monkeypatch: pytest.MonkeyPatch) -> DirFake:
    monkeypatch.setattr("tdx_boot_attest.agent.boot.file_ops", lambda: tsm_fake)
    return tsm_fake


class Setup:
    def __init__(
        self, tmp_path: Path, server: ScriptedServer, fake: DirFake, memory_dir: Path
    ) -> None:
        self.dir = tmp_path
        self.identity = memory_dir / "tdx-boot-attest" / "identity.key"
        self.kmsg = tmp_path / "kmsg"
        self.kmsg.touch()
        self.cmdline = tmp_path / "cmdline"
        self.cmdline.write_text("quiet\n")
        self.actions = tmp_path / "actions.log"
        self.device = tmp_path / "disk.img"
        self.device.touch()
        self.stdin_copy = tmp_path / "cryptsetup.stdin"
        fake_cryptsetup = tmp_path / "cryptsetup"
        fake_cryptsetup.write_text(
            f'#!/bin/sh\necho "$@" >> {tmp_path}/cryptsetup.argv\ncat > {self.stdin_copy}\n'
        )
        fake_cryptsetup.chmod(fake_cryptsetup.stat().st_mode | stat.S_IXUSR)
        # The host's own /sys/firmware CCEL (if any) never leaks into these tests.
        self.event_log = tmp_path / "CCEL"
        self.config = tmp_path / "agent.conf"
        self.write_config(server.url, fake.root / "report", fake_cryptsetup)

    def write_config(self, url: str, tsm_root: Path, cryptsetup: Path, extra: str = "") -> None:
        record = f"/bin/sh -c 'echo $0 >> {self.actions}'"
        self.config.write_text(
            f"[server]\nurl = {url}\nallow_http = true\n"
            f"[tsm]\nroot = {tsm_root}\n[eventlog]\npath = {self.event_log}\n"
            f"[identity]\npath = {self.identity}\n"
            f"[boot]\ndeadline = 5\non_failure = poweroff\ncryptsetup = {cryptsetup} open\n"
            f"check_mapper = false\npoweroff_command = {record} poweroff\n"
            f"reboot_command = {record} reboot\naskpass_command = /bin/echo typed\n{extra}"
            f"[volume root]\ndevice = {self.device}\n"
        )

    def run(self, *args: str) -> int:
        command, *rest = args
        return main(
            [command, "--config", str(self.config), "--cmdline", str(self.cmdline),
             "--kmsg", str(self.kmsg), *rest]
        )  # fmt: skip


@pytest.fixture
def setup(tmp_path: Path, server: ScriptedServer, fake_tsm: DirFake, memory_dir: Path) -> Setup:
    return Setup(tmp_path, server, fake_tsm, memory_dir)


def test_help_lists_commands_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    for word in ("boot", "keyscript", "quote", "check", "runtime", "exit codes", "FAILED reason="):
        assert word in out


def test_boot_unlocks_with_the_key_on_stdin(
    setup: Setup, server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.script("GET", protocol.NONCE_PATH, nonce_answer)
    server.script("POST", protocol.BOOT_ATTESTATION_PATH, release)
    assert setup.run("boot") == 0
    assert setup.stdin_copy.read_bytes() == PASSPHRASE
    argv = (setup.dir / "cryptsetup.argv").read_text()
    assert f"open --key-file=- {setup.device} root" in argv
    assert 'OK unlocked volume="root"' in setup.kmsg.read_text()
    captured = capsys.readouterr()
    assert PASSPHRASE.decode("latin-1") not in captured.out + captured.err
    assert not setup.actions.exists()


def test_refusal_prints_the_reason_and_runs_the_action(
    setup: Setup, server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.script("GET", protocol.NONCE_PATH, nonce_answer)
    server.script(
        "POST",
        protocol.BOOT_ATTESTATION_PATH,
        refusal(403, "measurement_mismatch", "rtmr1 differs from every approved image"),
    )
    assert setup.run("boot") == 5
    line = (
        "tdx-boot-attest: FAILED reason=measurement_mismatch "
        'message="rtmr1 differs from every approved image"'
    )
    assert line in capsys.readouterr().err
    assert line in setup.kmsg.read_text()
    assert setup.actions.read_text() == "poweroff\n"
    assert not setup.stdin_copy.exists()
    assert len(server.requests) == 2


def test_keyscript_prints_only_the_key(
    setup: Setup, server: ScriptedServer, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    server.script("GET", protocol.NONCE_PATH, nonce_answer)
    server.script("POST", protocol.BOOT_ATTESTATION_PATH, release)
    assert setup.run("keyscript") == 0
    captured = capfdbinary.readouterr()
    assert captured.out == PASSPHRASE
    assert b"OK key released" in captured.err


def test_keyscript_with_unknown_cryptab_name(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CRYPTTAB_NAME", "swap")
    assert setup.run("keyscript") == 2
    err = capsys.readouterr().err
    assert "reason=volume_unknown" in err
    assert "'swap'" in err


def test_keyscript_prompt_falls_back_to_askpass(
    setup: Setup, server: ScriptedServer, fake_tsm: DirFake, capfd: pytest.CaptureFixture[str]
) -> None:
    setup.write_config(
        server.url, fake_tsm.root / "report", Path("/bin/true"), extra="on_failure = prompt\n"
    )
    text = setup.config.read_text().replace("on_failure = poweroff\n", "")
    setup.config.write_text(text)
    server.script("GET", protocol.NONCE_PATH, refusal(403, "forbidden", "no"))
    assert setup.run("keyscript") == 0
    captured = capfd.readouterr()
    assert "typed Attestation failed. Please unlock disk the encrypted volume:" in captured.out
    assert "reason=forbidden" in captured.err


def test_no_tsm_provider(
    setup: Setup, server: ScriptedServer, fake_tsm: DirFake, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_tsm.faults.set_provider(None)
    server.script("GET", protocol.NONCE_PATH, nonce_answer)
    assert setup.run("boot") == 3
    assert "reason=tsm_unavailable" in capsys.readouterr().err
    assert setup.actions.read_text() == "poweroff\n"


def test_bad_config_exits_2_before_any_request(
    setup: Setup, server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    setup.cmdline.write_text("tdx_attest.deadline=forever\n")
    assert setup.run("boot") == 2
    err = capsys.readouterr().err
    assert "reason=config_invalid" in err
    assert "tdx_attest.deadline in the kernel command line" in err
    assert server.requests == []
    assert not setup.actions.exists()


def test_check_reports_each_part(
    setup: Setup, server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.script("GET", protocol.NONCE_PATH, nonce_answer)
    assert setup.run("check") == 0
    out = capsys.readouterr().out
    assert "ok     tsm:" in out
    assert "ok     server:" in out
    assert f"note   eventlog: no event log at {setup.event_log}" in out
    # check never makes the identity key: the boot attestation does.
    assert f"note   identity: none yet at {setup.identity}" in out
    assert not setup.identity.exists()
    setup.event_log.write_bytes((EVENT_LOGS / "qemu-direct-boot.ccel").read_bytes())
    server.script("GET", protocol.NONCE_PATH, nonce_answer)
    server.script("POST", protocol.BOOT_ATTESTATION_PATH, release)
    assert setup.run("boot") == 0
    assert setup.run("check") == 0
    again = capsys.readouterr().out
    assert f"ok     eventlog: {setup.event_log}, 19 events, 2026 bytes" in again
    public = load_identity(setup.identity).public_key.hex()
    assert f"ok     identity: {setup.identity}, Ed25519 public key {public}" in again
    assert "ok     volume root:" in out


def test_check_fails_for_an_identity_path_on_disk(
    setup: Setup, server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.script("GET", protocol.NONCE_PATH, nonce_answer)
    text = setup.config.read_text().replace(str(setup.identity), str(setup.dir / "id.key"))
    setup.config.write_text(text)
    assert setup.run("check") == 3
    assert "FAILED identity:" in capsys.readouterr().out
    # The boot refuses before any request, and runs the failure action.
    server.requests.clear()
    assert setup.run("boot") == 3
    assert "reason=identity_unavailable" in capsys.readouterr().err
    assert server.requests == []
    assert setup.actions.read_text() == "poweroff\n"
    assert not (setup.dir / "id.key").exists()


def test_check_fails_for_a_missing_device(
    setup: Setup, server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.script("GET", protocol.NONCE_PATH, nonce_answer)
    setup.device.unlink()
    assert setup.run("check") == 6
    assert "FAILED volume root: device_not_found" in capsys.readouterr().out


def test_quote_from_the_tsm_and_from_a_file(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = setup.dir / "q.bin"
    assert setup.run("quote", "--report-data", "11" * 64, "--out", str(saved)) == 0
    text = capsys.readouterr().out
    assert "report_data        " + "11" * 64 in text
    assert setup.run("quote", "--in", str(saved), "--json") == 0
    fields = json.loads(capsys.readouterr().out)
    assert fields["report_data"] == "11" * 64
    assert fields["version"] == 4
    assert fields["debug"] is False


def test_quote_with_bad_report_data(setup: Setup) -> None:
    assert setup.run("quote", "--report-data", "zz") == 2
    assert setup.run("quote", "--report-data", "00" * 10) == 2


def test_unexpected_errors_are_internal_with_traceback_on_verbose(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def explode(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("tdx_boot_attest.agent.boot.unlock_volumes", explode)
    assert setup.run("boot") == 1
    err = capsys.readouterr().err
    assert "reason=internal_error" in err
    assert "Traceback" not in err
    assert setup.run("boot", "--verbose") == 1
    assert "Traceback" in capsys.readouterr().err


def test_python_dash_m_agent_runs() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "tdx_boot_attest.agent", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "tdx-boot-agent" in result.stdout


EVENT_LOGS = Path(__file__).resolve().parent.parent / "assets" / "eventlog"


def test_boot_sends_the_event_log_without_its_padding(
    setup: Setup, server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    area = (EVENT_LOGS / "qemu-direct-boot-initrd.ccel").read_bytes()
    setup.event_log.write_bytes(area)
    server.script("GET", protocol.NONCE_PATH, nonce_answer)
    server.script("POST", protocol.BOOT_ATTESTATION_PATH, release)
    assert setup.run("boot") == 0
    sent = protocol.b64decode(json.loads(server.requests[-1].body)["event_log"], "event_log")
    assert sent == area[: parse_event_log(area).length] and len(sent) == 2120
    assert "attesting without it" not in capsys.readouterr().err


def test_boot_without_an_event_log_says_so_once_and_unlocks(
    setup: Setup, server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.script("GET", protocol.NONCE_PATH, nonce_answer)
    server.script("POST", protocol.BOOT_ATTESTATION_PATH, release)
    assert setup.run("boot") == 0
    assert "event_log" not in json.loads(server.requests[-1].body)
    err = capsys.readouterr().err
    assert err.count(f"no event log at {setup.event_log}") == 1
    assert "attesting without it" in err
    assert setup.stdin_copy.read_bytes() == PASSPHRASE


def test_a_required_event_log_that_is_missing_fails_the_boot_before_any_request(
    setup: Setup, server: ScriptedServer, fake_tsm: DirFake, capsys: pytest.CaptureFixture[str]
) -> None:
    text = setup.config.read_text().replace("[eventlog]\n", "[eventlog]\nrequired = true\n")
    setup.config.write_text(text)
    assert setup.run("boot") == 3
    err = capsys.readouterr().err
    assert "reason=event_log_unavailable" in err
    assert server.requests == []
    assert setup.actions.read_text() == "poweroff\n"


@pytest.fixture
def gce_tsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DirFake:
    """A TSM whose every quote is the real quote of the boot that wrote gce-cos113.ccel."""
    quote = (EVENT_LOGS / "gce-cos113.quote").read_bytes()
    fake = DirFake(tmp_path / "gce-tsm", TsmModel(lambda _report_data: quote))
    monkeypatch.setattr("tdx_boot_attest.agent.boot.file_ops", lambda: fake)
    return fake


def test_eventlog_shows_events_replay_and_the_quotes_verdict(
    gce_tsm: DirFake, capsys: pytest.CaptureFixture[str]
) -> None:
    log = EVENT_LOGS / "gce-cos113.ccel"
    root = str(gce_tsm.root / "report")
    assert main(["eventlog", "--event-log", str(log), "--tsm-root", root, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["events"]) == 43 and report["length"] == 18101
    assert report["covered"] == ["rtmr0", "rtmr1", "rtmr2"]
    assert report["matches"] == {"rtmr0": True, "rtmr1": True, "rtmr2": True, "rtmr3": None}
    assert main(["eventlog", "--event-log", str(log), "--tsm-root", root]) == 0
    out = capsys.readouterr().out
    assert "event log " in out and "43 events" in out
    assert "boot application \\EFI\\BOOT\\BOOTX64.EFI" in out
    assert "rtmr1 " in out and "equals the quote" in out
    assert "not covered by the log" in out


def test_eventlog_of_another_boot_is_a_mismatch(
    gce_tsm: DirFake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = EVENT_LOGS / "qemu-direct-boot.ccel"
    root = str(gce_tsm.root / "report")
    kmsg = tmp_path / "kmsg"
    args = ["eventlog", "--event-log", str(log), "--tsm-root", root, "--kmsg", str(kmsg)]
    assert main(args) == 3
    captured = capsys.readouterr()
    assert "DIFFERS from the quote's" in captured.out
    assert "reason=event_log_mismatch" in captured.err
    assert "rtmr0, rtmr1, rtmr2 differ" in captured.err
    assert main(["eventlog", "--event-log", str(log), "--no-quote", "--kmsg", str(kmsg)]) == 0
    assert "not compared with a quote" in capsys.readouterr().out


def test_eventlog_without_a_log_names_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "CCEL"
    args = ["eventlog", "--event-log", str(missing), "--no-quote", "--kmsg", str(tmp_path / "k")]
    assert main(args) == 3
    assert f'reason=event_log_unavailable message="no event log at {missing}' in (
        capsys.readouterr().err
    )


def test_config_is_accepted_before_the_command(
    setup: Setup, server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.script("GET", protocol.NONCE_PATH, nonce_answer)
    argv = ["--config", str(setup.config), "check", "--cmdline", str(setup.cmdline),
            "--kmsg", str(setup.kmsg)]  # fmt: skip
    assert main(argv) == 0
    assert "ok     server:" in capsys.readouterr().out
    # Without it, the default path is used and does not exist here.
    assert main(argv[2:]) == 2
