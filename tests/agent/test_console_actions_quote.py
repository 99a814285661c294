"""agent.console lines, agent.actions, agent.quote parsing."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from tdx_boot_attest.agent.actions import FailureActions
from tdx_boot_attest.agent.config import Config, FailureAction
from tdx_boot_attest.agent.console import Console, failure_line
from tdx_boot_attest.agent.errors import ActionError
from tdx_boot_attest.agent.quote import QuoteFormatError, parse_quote
from tests.agent.conftest import MRTD, synthetic_quote


def test_failure_line_is_one_greppable_line() -> None:
    line = failure_line("measurement_mismatch", 'rtmr1 differs\nfrom "golden"')
    assert line == (
        "tdx-boot-attest: FAILED reason=measurement_mismatch "
        'message="rtmr1 differs from \\"golden\\""'
    )


def test_console_writes_kmsg_and_stream(tmp_path: Path) -> None:
    kmsg = tmp_path / "kmsg"
    kmsg.touch()
    stream = io.StringIO()
    console = Console(kmsg=kmsg, stream=stream)
    console.failure("debug_td", "TD is in debug mode")
    console.success("unlocked", volume="root")
    console.info("progress only")
    assert kmsg.read_text().splitlines() == [
        '<3>tdx-boot-attest: FAILED reason=debug_td message="TD is in debug mode"',
        '<6>tdx-boot-attest: OK unlocked volume="root"',
    ]
    assert stream.getvalue().splitlines()[0].startswith("tdx-boot-attest: FAILED reason=debug_td")
    assert "progress only" in stream.getvalue()


def test_console_without_kmsg(tmp_path: Path) -> None:
    stream = io.StringIO()
    Console(kmsg=tmp_path / "absent", stream=stream).failure("x", "y")
    assert not (tmp_path / "absent").exists()
    assert stream.getvalue() == 'tdx-boot-attest: FAILED reason=x message="y"\n'


def test_long_messages_are_bounded() -> None:
    assert len(failure_line("x", "a" * 5000)) < 1000


def actions(
    on_failure: FailureAction, ran: list[tuple[str, ...]], status: int = 0
) -> FailureActions:
    config = Config(server_url="https://a", on_failure=on_failure)

    def runner(argv: object) -> int:
        ran.append(tuple(argv))  # type: ignore[arg-type]
        return status

    return FailureActions(config, runner)


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (FailureAction.PROMPT, []),
        (FailureAction.POWEROFF, [("poweroff", "-f")]),
        (FailureAction.REBOOT, [("reboot", "-f")]),
    ],
)
def test_failure_actions_run_their_command(
    action: FailureAction, expected: list[tuple[str, ...]]
) -> None:
    ran: list[tuple[str, ...]] = []
    actions(action, ran).run()
    assert ran == expected


def test_failing_action_is_reported() -> None:
    with pytest.raises(ActionError, match="status 1"):
        actions(FailureAction.POWEROFF, [], status=1).run()


def test_missing_action_command_is_reported() -> None:
    def runner(argv: object) -> int:
        raise FileNotFoundError(2, "No such file or directory")

    config = Config(server_url="https://a", on_failure=FailureAction.REBOOT)
    with pytest.raises(ActionError, match="cannot run reboot"):
        FailureActions(config, runner).run()


def test_askpass_gets_a_prompt_naming_the_volume() -> None:
    ran: list[tuple[str, ...]] = []
    assert actions(FailureAction.PROMPT, ran).ask_passphrase("root") == 0
    assert ran == [("/lib/cryptsetup/askpass", "Attestation failed. Please unlock disk root: ")]


@pytest.mark.parametrize("version", [4, 5])
def test_parse_quote_reads_the_td_report(version: int) -> None:
    report_data = bytes(range(64))
    summary = parse_quote(synthetic_quote(report_data, version=version, td_attributes=1))
    assert summary.version == version
    assert summary.report_data == report_data
    assert summary.fields["mrtd"] == MRTD
    assert summary.fields["rtmr2"] == bytes([0x12]) * 48
    assert summary.debug is True
    assert summary.as_hex()["mrtd"] == MRTD.hex()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda q: q[:100], "at least 632 bytes"),
        (lambda q: struct.pack("<H", 3) + q[2:], "version 3"),
        (lambda q: q[:4] + struct.pack("<I", 0) + q[8:], "not TDX"),
    ],
)
def test_parse_quote_refuses_other_shapes(mutate: object, message: str) -> None:
    quote = synthetic_quote(bytes(64))
    with pytest.raises(QuoteFormatError, match=message):
        parse_quote(mutate(quote))  # type: ignore[operator]


def test_parse_quote_v5_with_a_foreign_body() -> None:
    quote = bytearray(synthetic_quote(bytes(64), version=5))
    quote[48:50] = struct.pack("<H", 1)
    with pytest.raises(QuoteFormatError, match="not TDX"):
        parse_quote(bytes(quote))
