"""agent.console: the one-line failure record on the console and in kmsg."""

from __future__ import annotations

import io
from pathlib import Path

from tdx_boot_attest.agent.console import Console, failure_line


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
