"""agent.config: the INI file, kernel command-line overrides, precise errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tdx_boot_attest.agent.config import (
    DEFAULT_EVENT_LOG_PATH,
    DEFAULT_IDENTITY_PATH,
    DEFAULT_TSM_ROOT,
    Config,
    FailureAction,
    load_config,
    parse_cmdline,
)
from tdx_boot_attest.agent.errors import ConfigError
from tests.conftest import REPO_ROOT

ISSUE_EXAMPLE = """\
[server]
url = https://attest.example.net     ; required
allow_http = false                    ; true only for tests and the demo
[tsm]
root = /sys/kernel/config/tsm/report
[boot]
deadline = 300                        ; seconds for the whole unlock, all retries included
on_failure = prompt                   ; prompt | poweroff | reboot
[volume root]                         ; one section per volume; the name is the mapper name
device = UUID=0b2a1c2e-8d9f-4f5e-9a51-0123456789ab
options = --allow-discards            ; extra cryptsetup options
"""


def write(tmp_path: Path, text: str, cmdline: str = "") -> tuple[Path, Path]:
    conf = tmp_path / "agent.conf"
    conf.write_text(text)
    line = tmp_path / "cmdline"
    line.write_text(cmdline + "\n")
    return conf, line


def load(tmp_path: Path, text: str, cmdline: str = "") -> Config:
    conf, line = write(tmp_path, text, cmdline)
    return load_config(conf, line, require_file=True)


def error(tmp_path: Path, text: str, cmdline: str = "") -> str:
    conf, line = write(tmp_path, text, cmdline)
    with pytest.raises(ConfigError) as caught:
        load_config(conf, line, require_file=True)
    assert caught.value.reason == "config_invalid"
    return caught.value.message


def test_the_issue_example_parses(tmp_path: Path) -> None:
    conf, line = write(tmp_path, ISSUE_EXAMPLE)
    config = load_config(conf, line)
    assert config.server_url == "https://attest.example.net"
    assert config.allow_http is False
    assert config.tsm_root == DEFAULT_TSM_ROOT
    assert config.deadline == 300
    assert config.on_failure is FailureAction.PROMPT
    (volume,) = config.volumes
    assert volume.name == "root"
    assert volume.device == "UUID=0b2a1c2e-8d9f-4f5e-9a51-0123456789ab"
    assert volume.options == ("--allow-discards",)


def test_kernel_command_line_overrides_the_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    conf, line = write(
        tmp_path,
        ISSUE_EXAMPLE,
        "BOOT_IMAGE=/vmlinuz root=/dev/mapper/root quiet tdx_attest.url=http://10.0.2.2:8080/ "
        f"tdx_attest.allow_http=1 tdx_attest.deadline=12.5 tdx_attest.on_failure=poweroff "
        f'tdx_attest.tsm_root=/tmp/tsm/report tdx_attest.ca_bundle="{ca}"',
    )
    config = load_config(conf, line)
    assert config.server_url == "http://10.0.2.2:8080"
    assert config.allow_http is True
    assert config.deadline == 12.5
    assert config.on_failure is FailureAction.POWEROFF
    assert config.tsm_root == Path("/tmp/tsm/report")
    assert config.ca_bundle == ca


def test_command_line_alone_is_enough(tmp_path: Path) -> None:
    line = tmp_path / "cmdline"
    line.write_text("quiet tdx_attest.url=https://a.example\n")
    config = load_config(tmp_path / "absent.conf", line)
    assert config.server_url == "https://a.example"
    assert config.volumes == ()


def test_parse_cmdline_quotes_and_bare_keys() -> None:
    keys = parse_cmdline('a=b tdx_attest.url="https://x y" tdx_attest.allow_http  other=1\n')
    assert keys == {"url": "https://x y", "allow_http": ""}


def test_url_is_required_and_both_sources_are_named(tmp_path: Path) -> None:
    message = error(tmp_path, "[boot]\ndeadline = 3\n")
    assert "[server] url is required" in message
    assert "agent.conf" in message
    assert "kernel command line" in message


def test_plain_http_needs_allow_http(tmp_path: Path) -> None:
    message = error(tmp_path, "[server]\nurl = http://attest.example\n")
    assert message.startswith("[server] url in ")
    assert "agent.conf" in message
    assert "https" in message


def test_plain_http_from_the_command_line_names_it(tmp_path: Path) -> None:
    message = error(tmp_path, ISSUE_EXAMPLE, "tdx_attest.url=http://x")
    assert message.startswith("tdx_attest.url in the kernel command line")


@pytest.mark.parametrize(
    ("text", "cmdline", "expected"),
    [
        ("[boot]\ndeadline = soon\n", "", "[boot] deadline in"),
        ("[boot]\ndeadline = -1\n", "", "positive"),
        ("[boot]\ndeadline = nan\n", "", "positive"),
        ("", "tdx_attest.deadline=0", "tdx_attest.deadline in the kernel command line"),
        ("[boot]\non_failure = explode\n", "", "prompt | poweroff | reboot"),
        ("", "tdx_attest.on_failure=halt", "tdx_attest.on_failure"),
        ("[server]\nurl = https://a\nallow_http = maybe\n", "", "[server] allow_http in"),
        ("", "tdx_attest.ca_bundle=/nonexistent/ca.pem", "no such file"),
        ("", "tdx_attest.tsm_root=relative/report", "absolute path"),
        ("", "tdx_attest.urll=https://x", "tdx_attest.urll in the kernel command line: unknown"),
        ("[server]\nurll = x\n", "", "unknown key 'urll' in [server]"),
        ("[srever]\nurl = x\n", "", "unknown section [srever]"),
        ("[volume root]\noptions = -x\n", "", "'device' is required"),
        ("[volume root]\ndevice = sda1\n", "", "UUID=... or an absolute path"),
        ("[volume root]\ndevice = UUID=zz!\n", "", "not a valid UUID"),
        ("[volume a/b]\ndevice = /dev/sda\n", "", "not a valid mapper name"),
        ("[volume r]\ndevice = /dev/sda\noptions = --key-file=/k\n", "", "not allowed"),
        ("[volume r]\ndevice = /dev/sda\noptions = -d /k\n", "", "not allowed"),
        ("[volume r]\ndevice = /dev/sda\noptions = 'x\n", "", "cannot be split"),
        ("[volume r]\ndevice = /dev/sda\nsize = 3\n", "", "unknown key 'size'"),
        ("[boot]\ncryptsetup =\n", "", "must name a command"),
        ("[server]\nurl = https://a\nurl = https://b\n", "", "agent.conf"),
        ("[server]\nurl = https://user:pw@a\n", "", "credentials"),
        ("[server]\nurl = ftp://a\n", "", "https://"),
        ("[server]\nurl = https://a:99999\n", "", "not a valid URL"),
    ],
)
def test_bad_values_name_key_and_source(
    tmp_path: Path, text: str, cmdline: str, expected: str
) -> None:
    base = "[server]\nurl = https://attest.example\n" if "[server]" not in text else ""
    message = error(tmp_path, base + text, cmdline)
    assert expected in message


def test_duplicate_volume_sections(tmp_path: Path) -> None:
    text = "[server]\nurl = https://a\n[volume r]\ndevice = /x\n[volume  r]\ndevice = /y\n"
    assert "defined twice" in error(tmp_path, text)


def test_missing_file_only_matters_when_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.conf", None, require_file=True)


def test_boot_keys_and_defaults(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "[server]\nurl = https://a\n[boot]\ncryptsetup = cryptsetup open --test-passphrase\n"
        "check_mapper = no\npoweroff_command = /bin/sh -c 'echo off'\nread_timeout = 2\n",
    )
    assert config.cryptsetup == ("cryptsetup", "open", "--test-passphrase")
    assert config.check_mapper is False
    assert config.poweroff_command == ("/bin/sh", "-c", "echo off")
    assert config.reboot_command == ("reboot", "-f")
    assert config.read_timeout == 2


def test_kem_choice(tmp_path: Path) -> None:
    assert load(tmp_path, "[server]\nurl = https://a\n").kem == "x25519"
    config = load(tmp_path, "[server]\nurl = https://a\nkem = mlkem768-x25519\n")
    assert config.kem == "mlkem768-x25519"
    message = error(tmp_path, "[server]\nurl = https://a\nkem = rsa\n")
    assert message.startswith("[server] kem in ")
    assert "not supported" in message


def test_quote_mode_needs_no_server(tmp_path: Path) -> None:
    conf, line = write(tmp_path, "[tsm]\nroot = /x/report\n")
    config = load_config(conf, line, require_server=False)
    assert config.server_url == ""
    assert config.tsm_root == Path("/x/report")


def test_event_log_keys_and_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, "[server]\nurl = https://a\n")
    assert config.event_log_path == DEFAULT_EVENT_LOG_PATH
    assert config.event_log_required is False
    config = load(
        tmp_path,
        "[server]\nurl = https://a\n[eventlog]\npath = /x/CCEL\nrequired = yes\n",
        "tdx_attest.event_log=/run/CCEL",
    )
    assert config.event_log_path == Path("/run/CCEL")
    assert config.event_log_required is True
    message = error(tmp_path, "[server]\nurl = https://a\n[eventlog]\nrequired = maybe\n")
    assert message.startswith("[eventlog] required in ")
    message = error(tmp_path, "[server]\nurl = https://a\n", "tdx_attest.event_log=CCEL")
    assert message.startswith("tdx_attest.event_log in the kernel command line")


def test_the_shipped_example_with_a_url_and_a_volume_loads(tmp_path: Path) -> None:
    example = (REPO_ROOT / "initramfs-hooks" / "agent.conf.example").read_text()
    text = example.replace("url =\n", "url = https://attest.example.net\n").replace(
        "#[volume root]\n#device", "[volume root]\ndevice"
    )
    config = load_config(*write(tmp_path, text))
    assert (
        config.identity_path == DEFAULT_IDENTITY_PATH == Path("/run/tdx-boot-attest/identity.key")
    )
    assert [v.name for v in config.volumes] == ["root"]


def test_the_identity_path_is_configurable_and_must_be_absolute(tmp_path: Path) -> None:
    base = "[server]\nurl = https://a.example\n[identity]\npath = "
    assert load_config(*write(tmp_path, base + "/dev/shm/vm/id.key\n")).identity_path == Path(
        "/dev/shm/vm/id.key"
    )
    with pytest.raises(ConfigError, match=r"\[identity\] path"):
        load_config(*write(tmp_path, base + "relative/id.key\n"))
