"""The event log in boot attestation: replayed against the quote, kept, and explaining refusals.

Over real HTTP against the in-process verifier, on SQLite and PostgreSQL. The logs are the
simulator's measured boots of test components on the real TDVF direct-boot log's
platform (tests/support/eventlogs.py), so a changed kernel, initrd or command line
changes exactly the events real firmware would change.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import select

from tdx_boot_attest.agent.eventlog import EV_EFI_ACTION, parse_event_log
from tdx_boot_attest.agent.protocol import MAX_EVENT_LOG_BYTES, Reason
from tdx_boot_attest.server.db.engine import make_engine, make_sessionmaker, session_scope
from tdx_boot_attest.server.db.models import BootAttestation
from tdx_boot_attest.server.errors import RequestInvalid
from tdx_boot_attest.server.event_evidence import parse_event_log_field
from tdx_boot_attest.server.images import ReferenceEvents
from tdx_boot_attest.tdxsim.state import SimState
from tests.support.boot_client import AgentKey, get_nonce, post_quote
from tests.support.eventlogs import (
    Components,
    direct_boot_events,
    direct_boot_log,
    profile_for,
)
from tests.support.sim_server import SimServer, sim_server

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "eventlog"
GOLDEN = Components()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def srv(tmp_path: Path, database_url: str, sim: SimState) -> Iterator[SimServer]:
    with sim_server(tmp_path, database_url, sim) as server:
        events = direct_boot_events(GOLDEN)
        server.register_image(
            "web-2026-01",
            profile_for(events),
            reference=ReferenceEvents(tuple(events), "test golden boot"),
        )
        yield server


def boot_with(srv: SimServer, components: Components, **body: Any) -> httpx.Response:
    events = direct_boot_events(components)
    response, _, _ = srv.boot(
        profile_for(events), event_log=b64(direct_boot_log(components)), **body
    )
    return response


def attempts(srv: SimServer) -> list[BootAttestation]:
    engine = make_engine(srv.settings.database_url, pool_size=1)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            rows = list(
                session.scalars(select(BootAttestation).order_by(BootAttestation.created_at))
            )
            for row in rows:
                session.expunge(row)
            return rows
    finally:
        engine.dispose()


def refused(response: httpx.Response, status: int, reason: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body: dict[str, object] = response.json()
    assert body["reason"] == reason
    assert "sealed_key" not in body
    return body


# -- accepted --------------------------------------------------------------------------------


def test_a_boot_with_its_event_log_unlocks_and_the_log_is_kept(srv: SimServer) -> None:
    response = boot_with(srv, GOLDEN)
    assert response.status_code == 200, response.text
    (row,) = attempts(srv)
    assert row.verdict == "accepted"
    assert row.event_log == direct_boot_log(GOLDEN)
    assert row.differences is None
    assert row.bookkeeping is None  # the log is evidence, not bookkeeping


def test_a_boot_without_an_event_log_still_unlocks(srv: SimServer) -> None:
    response, _, _ = srv.boot(profile_for(direct_boot_events(GOLDEN)))
    assert response.status_code == 200, response.text
    (row,) = attempts(srv)
    assert row.event_log is None


# -- the log against the quote ---------------------------------------------------------------


def test_a_log_from_another_boot_is_refused_and_no_key_released(srv: SimServer) -> None:
    other = (ASSETS / "gce-cos113.ccel").read_bytes()[:18101]
    response, _, _ = srv.boot(profile_for(direct_boot_events(GOLDEN)), event_log=b64(other))
    body = refused(response, 403, "event_log_mismatch")
    message = str(body["message"])
    assert "rtmr0 replays to" in message and "rtmr1" in message and "rtmr2" in message
    (row,) = attempts(srv)
    assert (row.verdict, row.reason) == ("refused", "event_log_mismatch")
    assert row.event_log == other


def test_a_log_with_one_altered_digest_is_refused(srv: SimServer) -> None:
    events = direct_boot_events(GOLDEN)
    log = bytearray(direct_boot_log(GOLDEN))
    action = next(e for e in parse_event_log(bytes(log)).events if e.event_type == EV_EFI_ACTION)
    log[action.offset + 12 + 2] ^= 0x01  # first byte of its SHA-384 digest
    response, _, _ = srv.boot(profile_for(events), event_log=b64(bytes(log)))
    body = refused(response, 403, "event_log_mismatch")
    assert str(body["message"]).startswith("the event log does not belong to this quote: rtmr1 ")


# -- explained refusals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changed", "register", "event", "component"),
    [
        (Components(kernel="vmlinuz 6.1.0-other"), "rtmr1", "boot application kernel", "kernel"),
        (Components(initrd="initrd rebuilt"), "rtmr2", '"Linux initrd"', "initrd"),
        (
            Components(cmdline="console=ttyS0 root=/dev/mapper/root ro debug"),
            "rtmr2",
            '"LOADED_IMAGE::LoadOptions"',
            "kernel command line",
        ),
    ],
    ids=["kernel", "initrd", "cmdline"],
)
def test_a_drifted_component_is_named_in_the_refusal(
    srv: SimServer, changed: Components, register: str, event: str, component: str
) -> None:
    body = refused(boot_with(srv, changed), 403, "measurement_mismatch")
    message = str(body["message"])
    assert message.startswith(f"{register} differs from image web-2026-01: {event} ({component}) ")
    assert message.endswith("; everything else equal")
    (difference,) = cast(list[dict[str, Any]], body["differences"])
    assert difference["rtmr"] == register
    assert difference["event"] == event
    assert difference["component"] == component
    received = next(e for e in direct_boot_events(changed) if e.index == difference["event_index"])
    assert difference["digest_received"] == (received.sha384 or b"").hex()
    assert difference["digest_approved"] != difference["digest_received"]
    assert body["image"] == "web-2026-01"
    (row,) = attempts(srv)
    assert row.reason == "measurement_mismatch"
    assert json.loads(row.differences or "[]") == body["differences"]


def test_two_components_changed_are_both_named(srv: SimServer) -> None:
    changed = Components(kernel="other kernel", initrd="other initrd")
    body = refused(boot_with(srv, changed), 403, "measurement_mismatch")
    message = str(body["message"])
    assert message.startswith("rtmr1, rtmr2 differ from image web-2026-01: ")
    assert "(kernel)" in message and "(initrd)" in message
    assert len(body["differences"]) == 2  # type: ignore[arg-type]


def test_without_a_log_the_refusal_names_registers_only(srv: SimServer) -> None:
    events = direct_boot_events(Components(initrd="initrd rebuilt"))
    response, _, _ = srv.boot(profile_for(events))
    body = refused(response, 403, "measurement_mismatch")
    assert body["message"] == "rtmr2 differs from every approved image (closest: web-2026-01)"
    assert "differences" not in body


# -- malformed logs change nothing -------------------------------------------------------------


def _header_only() -> bytes:
    return direct_boot_log(GOLDEN)[:65]


HOSTILE = {
    "truncated-in-a-record": lambda: direct_boot_log(GOLDEN)[:500],
    "truncated-in-the-header": lambda: direct_boot_log(GOLDEN)[:40],
    "random-bytes": lambda: hashlib.sha512(b"random").digest() * 40,
    "digest-count-2^32-1": lambda: _header_only() + struct.pack("<III", 1, 4, 0xFFFFFFFF),
    "size-past-the-end": lambda: (
        _header_only()
        + struct.pack("<IIIH", 1, 4, 1, 0x000C)
        + bytes(48)
        + struct.pack("<I", 1 << 30)
    ),
    "unknown-algorithm": lambda: _header_only() + struct.pack("<IIIH", 1, 4, 1, 0x0999),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_malformed_log_is_422_and_leaves_the_nonce_usable(srv: SimServer, name: str) -> None:
    events = direct_boot_events(GOLDEN)
    key = AgentKey.generate()
    nonce = get_nonce(srv.client)
    quote = srv.quote_for(nonce, key, profile_for(events))
    bad = HOSTILE[name]()
    response = post_quote(srv.client, quote, key, nonce.hex(), event_log=b64(bad))
    body = refused(response, 422, "event_log_invalid")
    assert "event log invalid at byte" in str(body["message"])
    good = post_quote(srv.client, quote, key, nonce.hex(), event_log=b64(direct_boot_log(GOLDEN)))
    assert good.status_code == 200, good.text
    rows = attempts(srv)
    assert [(r.verdict, r.reason) for r in rows] == [
        ("refused", "event_log_invalid"),
        ("accepted", None),
    ]
    assert rows[0].event_log == bad


def test_not_base64_and_too_large_logs_are_422(srv: SimServer) -> None:
    events = direct_boot_events(GOLDEN)
    response, _, _ = srv.boot(profile_for(events), event_log="not base64!")
    refused(response, 422, "event_log_invalid")
    too_large = b64(direct_boot_log(GOLDEN) + bytes(MAX_EVENT_LOG_BYTES))
    response, _, _ = srv.boot(profile_for(events), event_log=too_large)
    body = refused(response, 422, "event_log_invalid")
    assert f"larger than {MAX_EVENT_LOG_BYTES} bytes" in str(body["message"])


@pytest.mark.parametrize(
    "name", ["gce-cos113.ccel", "qemu-direct-boot.ccel", "qemu-direct-boot-initrd.ccel"]
)
def test_every_truncation_of_a_real_log_is_refused_cleanly_by_the_server(name: str) -> None:
    data = (ASSETS / name).read_bytes()
    full = parse_event_log(data)
    boundaries = {e.offset for e in full.events} | {full.length}
    for cut in range(full.length):
        try:
            parse_event_log_field(data[:cut])
        except RequestInvalid as exc:
            assert exc.reason is Reason.EVENT_LOG_INVALID
            assert exc.status_code == 422
            continue
        assert cut in boundaries


# -- requiring the log -------------------------------------------------------------------------


def test_a_verifier_can_require_the_event_log(
    tmp_path: Path, database_url: str, sim: SimState
) -> None:
    events = direct_boot_events(GOLDEN)
    with sim_server(tmp_path, database_url, sim, require_event_log=True) as server:
        server.register_image("web-2026-01", profile_for(events))
        key = AgentKey.generate()
        nonce = get_nonce(server.client)
        quote = server.quote_for(nonce, key, profile_for(events))
        body = refused(
            post_quote(server.client, quote, key, nonce.hex()), 403, "event_log_required"
        )
        assert "requires the firmware event log" in str(body["message"])
        # Refused before the nonce was spent: the same nonce works with the log.
        response = post_quote(
            server.client, quote, key, nonce.hex(), event_log=b64(direct_boot_log(GOLDEN))
        )
        assert response.status_code == 200, response.text
