"""agent.eventlog: real TDX event logs, replay, names, the writer, and hostile input."""

from __future__ import annotations

import hashlib
import json
import random
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tdx_boot_attest.agent import eventlog
from tdx_boot_attest.agent.eventlog import (
    ALG_SHA384,
    EV_EFI_ACTION,
    EV_EVENT_TAG,
    EV_NO_ACTION,
    EV_SEPARATOR,
    MAX_EVENTS,
    EventLogError,
    computed_event,
    encode_event_log,
    event_from_json,
    event_to_json,
    parse_event_log,
)
from tdx_boot_attest.agent.protocol import Reason
from tdx_boot_attest.agent.quote import parse_quote

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "eventlog"
GCE = ASSETS / "gce-cos113.ccel"
QEMU = ASSETS / "qemu-direct-boot.ccel"
QEMU_INITRD = ASSETS / "qemu-direct-boot-initrd.ccel"
REAL_LOGS = [GCE, QEMU, QEMU_INITRD]
# The used part of each real log (the rest of its area is padding).
USED_BYTES = {GCE: 18101, QEMU: 2026, QEMU_INITRD: 2120}


@pytest.fixture(scope="module")
def logs() -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in REAL_LOGS}


# -- real logs ---------------------------------------------------------------------------


def test_real_logs_parse_with_their_event_counts(logs: dict[Path, bytes]) -> None:
    counts = {path: len(parse_event_log(data).events) for path, data in logs.items()}
    assert counts == {GCE: 43, QEMU: 19, QEMU_INITRD: 20}
    for path, data in logs.items():
        log = parse_event_log(data)
        assert log.length == USED_BYTES[path]
        assert log.algorithms == ((ALG_SHA384, 48),)
        assert [e.index for e in log.events] == list(range(len(log.events)))


def test_gce_log_replays_to_the_quotes_rtmrs(logs: dict[Path, bytes]) -> None:
    quote = parse_quote((ASSETS / "gce-cos113.quote").read_bytes())
    log = parse_event_log(logs[GCE])
    replayed = log.replay()
    for n in range(3):
        assert replayed[n] == quote.fields[f"rtmr{n}"], f"rtmr{n}"
    assert replayed[3] == bytes(48) == quote.fields["rtmr3"]
    assert log.covered() == frozenset({0, 1, 2})


def test_qemu_direct_boot_logs_name_their_events(logs: dict[Path, bytes]) -> None:
    names = [e.name for e in parse_event_log(logs[QEMU_INITRD]).events]
    assert names == [
        "TD HOB",
        "configuration firmware volume Fv(XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX)",
        'EFI variable "SecureBoot"',
        'EFI variable "PK"',
        'EFI variable "KEK"',
        'EFI variable "db"',
        'EFI variable "dbx"',
        "separator",
        '"ACPI DATA"',
        '"ACPI DATA"',
        '"ACPI DATA"',
        "boot application kernel",
        "BootOrder",
        "Boot0000",
        'EFI action "Calling EFI Application from Boot Option"',
        "separator",
        '"LOADED_IMAGE::LoadOptions"',
        '"Linux initrd"',
        'EFI action "Exit Boot Services Invocation"',
        'EFI action "Exit Boot Services Returned with Success"',
    ]
    # The older stub writes the tag's description without the tagged-event header.
    older = parse_event_log(logs[QEMU]).events
    assert [e.name for e in older if e.event_type == EV_EVENT_TAG] == [
        '"LOADED_IMAGE::LoadOptions"'
    ]
    assert [e.rtmr for e in older] == [0] * 11 + [1, 0, 0, 1, 0, 2, 1, 1]


def test_initrd_log_agrees_with_another_parser_event_by_event(logs: dict[Path, bytes]) -> None:
    other = json.loads((ASSETS / "qemu-direct-boot-initrd.parsed.json").read_text())
    theirs = other["uefi_event_logs"]
    ours = parse_event_log(logs[QEMU_INITRD]).events
    assert len(ours) == len(theirs)
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine.mr_index == reference["index"]
        assert mine.type_name == reference["type_name"]
        (digest,) = reference["digests"]
        assert digest["alg"] == "SHA-384"
        assert mine.sha384 is not None and mine.sha384.hex() == digest["digest"]


def test_gce_names_cover_shim_grub_and_gpt(logs: dict[Path, bytes]) -> None:
    names = [e.name for e in parse_event_log(logs[GCE]).events]
    assert "GPT" in names
    assert "boot application \\EFI\\BOOT\\BOOTX64.EFI" in names
    assert 'EFI authority "SbatLevel"' in names
    assert "Boot0001" in names
    assert any(n.startswith('IPL "kernel_cmdline: /syslinux/vmlinuz.A') for n in names)


def test_variable_digests_follow_the_uefi_variable_data_rule(logs: dict[Path, bytes]) -> None:
    """EFI_VARIABLE_DRIVER_CONFIG events hash the whole UEFI_VARIABLE_DATA structure."""
    for event in parse_event_log(logs[QEMU_INITRD]).events[2:7]:
        variable = eventlog.parse_variable(event.data)
        assert variable is not None
        rebuilt = eventlog.variable_event_data(variable.vendor_guid, variable.name, variable.data)
        assert rebuilt == event.data
        assert hashlib.sha384(rebuilt).digest() == event.sha384


# -- writing and the JSON form -----------------------------------------------------------


def test_written_logs_parse_back_with_the_same_events_and_replay(logs: dict[Path, bytes]) -> None:
    original = parse_event_log(logs[QEMU_INITRD])
    written = encode_event_log(original.events, pad_to=65536)
    again = parse_event_log(written)
    assert again.events == original.events
    assert again.replay() == original.replay()
    assert len(written) == 65536 and written.endswith(b"\xff" * 100)
    assert parse_event_log(encode_event_log(original.events, pad_to=4096, pad_byte=0)).events == (
        original.events
    )


def test_json_form_round_trips_and_keeps_the_detail() -> None:
    event = computed_event(
        3, EV_EVENT_TAG, b"LOADED_IMAGE::LoadOptions\x00", detail='command line "ro quiet"'
    )
    data = event_to_json(event)
    assert data["rtmr"] == 2 and data["name"] == '"LOADED_IMAGE::LoadOptions"'
    back = event_from_json(json.loads(json.dumps(data)), 0)
    assert back == event and back.detail == event.detail


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"mr_index": 1, "type": 4},
        {"mr_index": -1, "type": 4, "sha384": "00" * 48},
        {"mr_index": 1, "type": True, "sha384": "00" * 48},
        {"mr_index": 1, "type": 4, "sha384": "00" * 47},
        {"mr_index": 1, "type": 4, "sha384": "zz" * 48},
        {"mr_index": 1, "type": 4, "sha384": "00" * 48, "data": "0"},
        {"mr_index": 1, "type": 4, "sha384": "00" * 48, "detail": 7},
    ],
)
def test_malformed_json_events_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="event 5"):
        event_from_json(bad, 5)


# -- hostile input -----------------------------------------------------------------------


def _header(count: int = 1, algorithms: list[tuple[int, int]] | None = None) -> bytes:
    pairs = algorithms if algorithms is not None else [(ALG_SHA384, 48)][:count]
    spec = struct.pack("<16sIBBBBI", b"Spec ID Event03\x00", 0, 0, 2, 0, 2, len(pairs))
    spec += b"".join(struct.pack("<HH", alg, size) for alg, size in pairs) + b"\x00"
    return struct.pack("<II20sI", 1, EV_NO_ACTION, bytes(20), len(spec)) + spec


def _record(
    mr: int = 1, kind: int = EV_SEPARATOR, count: int = 1, data: bytes = b"\x00" * 4
) -> bytes:
    out = struct.pack("<III", mr, kind, count)
    out += struct.pack("<H", ALG_SHA384) + hashlib.sha384(data).digest()
    return out + struct.pack("<I", len(data)) + data


def test_a_minimal_hand_built_log_parses() -> None:
    log = parse_event_log(_header() + _record())
    assert [e.name for e in log.events] == ["separator"]


@pytest.mark.parametrize(
    ("data", "offset", "words"),
    [
        (b"", 0, "needs 32 bytes"),
        (struct.pack("<II20sI", 1, EV_SEPARATOR, bytes(20), 0), 4, "not EV_NO_ACTION"),
        (_header()[:-10], 32, "needs"),
        (_header().replace(b"Spec ID Event03", b"Spec ID Event02"), 32, "crypto-agile"),
        (_header(algorithms=[(0x000B, 32)]), 32, "no SHA-384 bank"),
        (_header(algorithms=[(ALG_SHA384, 32)]), 60, "it has 48"),
        (_header(algorithms=[(ALG_SHA384, 48), (ALG_SHA384, 48)]), 64, "twice"),
        (_header(algorithms=[(0x0999, 0)]), 60, "not plausible"),
        (_header() + struct.pack("<III", 1, EV_SEPARATOR, 0xFFFFFFFF), None, "2^32"),
        (_header() + struct.pack("<IIIH", 1, EV_SEPARATOR, 1, 0x0999), None, "not declared"),
        (_header() + _record()[:-6], None, "event 0 data size"),
        (_header() + _record()[:-1], None, "event 0 data needs 4"),
        (_header() + struct.pack("<IIII", 1, EV_SEPARATOR, 0, 4) + bytes(4), None, "SHA-384"),
    ],
    ids=[
        "empty",
        "first-record-not-no-action",
        "spec-id-truncated",
        "not-crypto-agile",
        "no-sha384-bank",
        "wrong-sha384-size",
        "algorithm-twice",
        "implausible-digest-size",
        "digest-count-2^32-1",
        "undeclared-algorithm",
        "truncated-in-size",
        "data-past-the-end",
        "no-sha384-digest",
    ],
)
def test_malformed_logs_name_the_offset(data: bytes, offset: int | None, words: str) -> None:
    with pytest.raises(EventLogError) as caught:
        parse_event_log(data)
    error = caught.value
    assert error.reason is Reason.EVENT_LOG_INVALID
    assert 0 <= error.offset <= len(data)
    if offset is not None:
        assert error.offset == offset
    if words == "2^32":
        assert "4294967295 digests" in str(error)
    else:
        assert words in str(error)
    assert f"at byte {error.offset}" in str(error)


def test_size_and_event_count_limits() -> None:
    with pytest.raises(EventLogError, match="more than the 1048576 allowed"):
        parse_event_log(_header() + b"\x01" * (1024 * 1024))
    # EV_NO_ACTION records with no digest are the smallest records: 16 bytes each.
    tiny = struct.pack("<IIII", 0, EV_NO_ACTION, 0, 0)
    with pytest.raises(EventLogError, match=f"more than {MAX_EVENTS} events"):
        parse_event_log(_header() + tiny * (MAX_EVENTS + 1))
    assert len(parse_event_log(_header() + tiny * 10).events) == 10


@pytest.mark.slow
@pytest.mark.parametrize("path", REAL_LOGS, ids=lambda p: p.name)
def test_every_truncation_of_a_real_log_is_refused_or_a_prefix(
    path: Path, logs: dict[Path, bytes]
) -> None:
    data = logs[path]
    full = parse_event_log(data)
    boundaries = {e.offset for e in full.events} | {full.length}
    for cut in range(full.length):
        try:
            shorter = parse_event_log(data[:cut])
        except EventLogError as exc:
            assert 0 <= exc.offset <= cut
            continue
        # Only a cut on a record boundary leaves a log, and it is the full log's prefix.
        assert cut in boundaries, cut
        assert shorter.events == full.events[: len(shorter.events)]
        assert shorter.length == cut


def _must_parse_or_refuse(data: bytes) -> None:
    try:
        log = parse_event_log(data)
    except EventLogError as exc:
        assert 0 <= exc.offset <= len(data)
        return
    for event in log.events:
        assert isinstance(event.name, str) and event.name
    log.replay()


@settings(max_examples=300)
@given(st.binary(max_size=4096))
def test_random_bytes_are_refused_cleanly(data: bytes) -> None:
    _must_parse_or_refuse(data)


@settings(max_examples=400)
@given(
    which=st.sampled_from([QEMU, QEMU_INITRD]),
    edits=st.lists(st.tuples(st.integers(0, 2200), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.integers(0, 2200) | st.none(),
)
def test_mutated_real_logs_are_parsed_or_refused_cleanly(
    which: Path, edits: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(which.read_bytes()[: USED_BYTES[which]])
    for position, value in edits:
        if position < len(data):
            data[position] = value
    _must_parse_or_refuse(bytes(data if cut is None else data[:cut]))


@settings(max_examples=200)
@given(st.binary(max_size=300), st.sampled_from(sorted(eventlog.EVENT_TYPE_NAMES)))
def test_names_never_fail_whatever_the_data(data: bytes, kind: int) -> None:
    event = computed_event(1, kind, data)
    assert isinstance(event.name, str) and event.name


def test_a_seeded_corpus_of_random_logs_is_refused_or_parsed() -> None:
    """Random well-framed logs: valid framing with random types, indexes and data."""
    rng = random.Random(20261130)
    for _ in range(200):
        body = b"".join(
            _record(
                mr=rng.choice([0, 1, 2, 3, 4, 5, 0xFFFFFFFF]),
                kind=rng.choice([EV_SEPARATOR, EV_EFI_ACTION, EV_EVENT_TAG, rng.getrandbits(32)]),
                data=rng.randbytes(rng.randrange(0, 64)),
            )
            for _ in range(rng.randrange(0, 20))
        )
        _must_parse_or_refuse(_header() + body)
