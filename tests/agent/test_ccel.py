"""agent.ccel: reading the firmware event log for sending, and what happens without one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tdx_boot_attest.agent.ccel import EventLogUnavailable, event_log_to_send, read_event_log
from tdx_boot_attest.agent.errors import LocalReason
from tdx_boot_attest.agent.eventlog import computed_event, encode_event_log, parse_event_log
from tdx_boot_attest.agent.protocol import MAX_EVENT_LOG_BYTES

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "eventlog"


def test_a_padded_log_area_is_sent_without_its_padding(tmp_path: Path) -> None:
    read = read_event_log(ASSETS / "gce-cos113.ccel")
    assert read.problem is None and read.data is not None
    assert len(read.data) == 18101
    assert (ASSETS / "gce-cos113.ccel").read_bytes().startswith(read.data)
    assert len(parse_event_log(read.data).events) == 43


def test_no_log_unreadable_log_and_malformed_log_are_named(tmp_path: Path) -> None:
    missing = read_event_log(tmp_path / "CCEL")
    assert missing.data is None
    assert missing.problem is not None and "no event log at" in missing.problem
    unreadable = read_event_log(tmp_path)
    assert unreadable.data is None
    assert unreadable.problem is not None and "cannot read the event log" in unreadable.problem
    broken = tmp_path / "broken"
    broken.write_bytes((ASSETS / "qemu-direct-boot.ccel").read_bytes()[:300])
    malformed = read_event_log(broken)
    assert malformed.data is None
    assert malformed.problem is not None and "malformed: event log invalid at byte" in (
        malformed.problem
    )


def test_a_log_too_large_to_send_is_not_sent(tmp_path: Path) -> None:
    big = computed_event(4, 0xD, b"x" * 60_000)
    path = tmp_path / "CCEL"
    path.write_bytes(encode_event_log([big] * 5, pad_to=1024 * 1024))
    read = read_event_log(path)
    assert read.data is None
    assert read.problem is not None and f"more than the {MAX_EVENT_LOG_BYTES}" in read.problem


def test_a_required_log_that_cannot_be_read_stops_the_boot(tmp_path: Path) -> None:
    assert event_log_to_send(tmp_path / "CCEL", required=False).data is None
    with pytest.raises(EventLogUnavailable) as caught:
        event_log_to_send(tmp_path / "CCEL", required=True)
    assert caught.value.reason == LocalReason.EVENT_LOG_UNAVAILABLE
    assert caught.value.exit_code == 3
    assert "required = true" in caught.value.message


def test_the_simulated_devices_log_is_read_and_sent_without_its_padding(tmp_path: Path) -> None:
    from tdx_boot_attest.tdxsim.profile import Profile
    from tdx_boot_attest.tdxsim.tsm.dirfake import DirFake
    from tdx_boot_attest.tdxsim.tsm.model import TsmModel
    from tests.agent.conftest import synthetic_quote

    profile = Profile.builtin("other")
    fake = DirFake(tmp_path / "tsm", TsmModel(synthetic_quote), event_log=profile.event_log())

    read = event_log_to_send(fake.event_log_path, required=True)

    assert read.problem is None
    assert read.data == profile.event_log(padded=False)
    replayed = parse_event_log(read.data or b"").replay()
    assert [value.hex() for value in replayed] == list(profile.rtmrs)
