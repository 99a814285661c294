"""RTMR extension and event-log replay, checked against hashlib computed here."""

from __future__ import annotations

import hashlib
import json

import pytest

from tdxsim import measured_boot as mb
from tdxsim.errors import EventLogError
from tdxsim.profile import Profile

ZERO = bytes(48)


def _sha384(data: bytes) -> bytes:
    return hashlib.sha384(data).digest()


def test_extend_is_sha384_of_old_and_digest() -> None:
    digest = _sha384(b"kernel")

    assert mb.extend(ZERO, digest) == hashlib.sha384(ZERO + digest).digest()
    assert mb.extend(ZERO, ZERO).hex() == (
        # SHA-384 of 96 zero bytes
        hashlib.sha384(bytes(96)).hexdigest()
    )


def test_extend_refuses_wrong_sizes() -> None:
    with pytest.raises(EventLogError):
        mb.extend(ZERO, hashlib.sha256(b"x").digest())
    with pytest.raises(EventLogError):
        mb.extend(bytes(32), ZERO)


def test_replay_matches_a_hand_computed_chain() -> None:
    raw_digest = _sha384(b"pre-hashed")
    log = "\n".join(
        [
            "# comment lines and blank lines are skipped",
            "",
            json.dumps({"rtmr": 1, "data": "vmlinuz", "description": "kernel"}),
            json.dumps({"rtmr": 1, "data_hex": "00ff", "description": "bytes"}),
            json.dumps({"rtmr": 2, "digest": raw_digest.hex()}),
            json.dumps({"rtmr": 3, "data": "app"}),
        ]
    )
    rtmr1 = _sha384(_sha384(ZERO + _sha384(b"vmlinuz")) + _sha384(b"\x00\xff"))
    rtmr2 = _sha384(ZERO + raw_digest)
    rtmr3 = _sha384(ZERO + _sha384(b"app"))

    events = mb.parse_event_log(log)

    assert [e.description for e in events] == ["kernel", "bytes", "", ""]
    assert mb.replay(events) == (ZERO, rtmr1, rtmr2, rtmr3)


def test_formatted_log_replays_the_same() -> None:
    events = [mb.Event.of_data(0, b"a"), mb.Event.of_data(0, b"b", "second")]

    again = mb.parse_event_log(mb.format_event_log(events))

    assert again == events
    assert mb.replay(again)[0] == _sha384(_sha384(ZERO + _sha384(b"a")) + _sha384(b"b"))


def test_replay_from_initial_values() -> None:
    start = (bytes([1]) * 48, bytes([2]) * 48, bytes([3]) * 48, bytes([4]) * 48)

    result = mb.replay([mb.Event.of_data(3, b"x")], initial=start)

    assert result[:3] == start[:3]
    assert result[3] == _sha384(start[3] + _sha384(b"x"))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not JSON"),
        ("[1]", "JSON object"),
        ('{"rtmr": 4, "data": "x"}', "rtmr"),
        ('{"rtmr": true, "data": "x"}', "rtmr"),
        ('{"rtmr": 0}', "exactly one"),
        ('{"rtmr": 0, "data": "x", "digest": "00"}', "exactly one"),
        ('{"rtmr": 0, "digest": "abcd"}', "48 bytes"),
        ('{"rtmr": 0, "data_hex": "zz"}', "not hexadecimal"),
        ('{"rtmr": 0, "data": 5}', "must be a string"),
    ],
)
def test_bad_lines_are_refused_with_their_line_number(line: str, message: str) -> None:
    with pytest.raises(EventLogError, match=message) as caught:
        mb.parse_event_log('{"rtmr": 0, "data": "ok"}\n' + line)

    assert "line 2" in str(caught.value)


def test_kernel_change_moves_only_rtmr1() -> None:
    """The shipped profiles are the replays of the shipped event logs ("other" = new kernel)."""
    from importlib import resources

    profiles = resources.files("tdxsim").joinpath("profiles")
    default_events = mb.parse_event_log(profiles.joinpath("default.events.jsonl").read_text())
    other_events = mb.parse_event_log(profiles.joinpath("other.events.jsonl").read_text())

    default = Profile.builtin("default")
    other = Profile.builtin("other")

    assert [r.hex() for r in mb.replay(default_events)] == list(default.rtmrs)
    assert [r.hex() for r in mb.replay(other_events)] == list(other.rtmrs)
    assert default.rtmr1 != other.rtmr1
    assert (default.rtmr0, default.rtmr2, default.rtmr3, default.mrtd) == (
        other.rtmr0,
        other.rtmr2,
        other.rtmr3,
        other.mrtd,
    )


def test_profile_from_events_keeps_the_base_fields() -> None:
    base = Profile.default().replace(mrowner="ab" * 48)

    profile = mb.profile_from_events(base, [mb.Event.of_data(2, b"cmdline")], name="custom")

    assert profile.name == "custom"
    assert profile.mrowner == "ab" * 48
    assert profile.rtmr2 == _sha384(ZERO + _sha384(b"cmdline")).hex()
    assert profile.rtmr1 == ZERO.hex()
