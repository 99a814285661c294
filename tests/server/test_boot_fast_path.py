"""The boot endpoints' fast path answers exactly as the framework's routes do (real HTTP).

One application, two doors on loopback: the server as it runs (BootFastPath in front)
and the same application's framework stack alone (the routes in server.routers.boot).
Every request goes through both; status, headers and body must match (an accepted boot
differs only in its random attestation id and sealed key, and each must open).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from tdx_boot_attest.agent.protocol import BOOT_ATTESTATION_PATH, NONCE_HEADER, NONCE_PATH
from tdx_boot_attest.server.app import VerifierApp
from tdx_boot_attest.server.db.availability import DatabaseGate
from tdx_boot_attest.tdxsim.profile import Profile
from tdx_boot_attest.tdxsim.state import SimState
from tests.support.boot_client import AgentKey, get_nonce
from tests.support.sim_server import SimServer, sim_server
from tests.support.uvicorn_thread import serve_in_thread

# Headers whose values legitimately differ between two answers.
_VARYING_HEADERS = {"date", "content-length"}


@dataclass
class Doors:
    """The server (fast path in front) and the same application without it."""

    srv: SimServer
    framework: httpx.Client
    passed_on: list[str]

    def both(self, send: Callable[[httpx.Client], httpx.Response]) -> list[httpx.Response]:
        return [send(self.srv.client), send(self.framework)]


def _framework_only(app: VerifierApp) -> ASGIApp:
    """The application as the framework serves it, without BootFastPath."""

    async def framework(scope: Scope, receive: Receive, send: Send) -> None:
        await FastAPI.__call__(app, scope, receive, send)

    return framework


@pytest.fixture
def doors(tmp_path: Path, database_url: str, sim: SimState) -> Iterator[Doors]:
    with sim_server(tmp_path, database_url, sim) as srv:
        srv.register_image("golden")
        srv.client.get("/healthz").raise_for_status()
        assert isinstance(srv.app, VerifierApp)
        fast = srv.app.fast_path
        passed_on: list[str] = []
        inner = fast.app

        async def recording(scope: Scope, receive: Receive, send: Send) -> None:
            passed_on.append(f"{scope['method']} {scope['path']}")
            await inner(scope, receive, send)

        fast.app = recording
        with (
            serve_in_thread(_framework_only(srv.app)) as framework_url,
            httpx.Client(base_url=framework_url, timeout=30) as framework,
        ):
            yield Doors(srv, framework, passed_on)


def _comparable(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    headers = {k: v for k, v in response.headers.items() if k not in _VARYING_HEADERS}
    return response.status_code, headers, response.json()


def _same(responses: list[httpx.Response]) -> tuple[int, dict[str, str], Any]:
    fast, framework = (_comparable(r) for r in responses)
    assert fast == framework
    return fast


def _attestation_body(doors: Doors, nonce: bytes, key: AgentKey, **extra: Any) -> dict[str, Any]:
    quote = doors.srv.quote_for(nonce, key)
    return {"quote": base64.b64encode(quote).decode(), "public_key": key.public_b64, **extra}


def _post(
    body: bytes | dict[str, Any],
    nonce_hex: str | None,
    content_type: str | None = "application/json",
) -> Callable[[httpx.Client], httpx.Response]:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    headers = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if nonce_hex is not None:
        headers[NONCE_HEADER] = nonce_hex
    return lambda client: client.post(BOOT_ATTESTATION_PATH, content=raw, headers=headers)


def test_accepted_boots_answer_alike_and_both_open(doors: Doors) -> None:
    answers = []
    for client in (doors.srv.client, doors.framework):
        key = AgentKey.generate()
        nonce = get_nonce(client)
        response = _post(_attestation_body(doors, nonce, key, vm_name="vm-1"), nonce.hex())(client)
        assert response.status_code == 200, response.text
        assert key.open(response.json()["sealed_key"], nonce).startswith(b"luks-")
        answers.append(response)
    fast, framework = (_comparable(r) for r in answers)
    assert fast[:2] == framework[:2]
    assert fast[2].keys() == framework[2].keys()
    assert fast[2]["image"] == framework[2]["image"] == "golden"
    assert doors.passed_on == []


def test_nonce_answers_alike(doors: Doors) -> None:
    fast, framework = doors.both(lambda client: client.get(NONCE_PATH))
    assert fast.status_code == framework.status_code == 200
    assert fast.headers["content-type"] == framework.headers["content-type"]
    assert fast.json().keys() == framework.json().keys() == {"nonce", "expires_at"}
    assert doors.passed_on == []


Case = Callable[[Doors, bytes, AgentKey, dict[str, Any]], tuple[bytes | dict[str, Any], str | None]]
_OTHER_IMAGE = Profile.default().with_rtmr(2, "11" * 48)
# Each refusal built from a fresh nonce, key and honest body (a refusal may spend the nonce).
CASES: dict[str, Case] = {
    "no nonce header": lambda d, n, k, good: (good, None),
    "nonce not hex": lambda d, n, k, good: (good, "zz" * 32),
    "nonce never issued": lambda d, n, k, good: (good, "ab" * 32),
    "quote not base64": lambda d, n, k, good: ({**good, "quote": "***"}, n.hex()),
    "quote with excess padding": lambda d, n, k, good: (
        {**good, "quote": good["quote"] + "="},
        n.hex(),
    ),
    "public key too short": lambda d, n, k, good: ({**good, "public_key": "AAAA"}, n.hex()),
    "unknown kem": lambda d, n, k, good: ({**good, "kem": "rsa"}, n.hex()),
    "lone surrogate in vm_name": lambda d, n, k, good: (
        json.dumps({**good, "vm_name": "x"}).replace('"x"', '"\\ud800"').encode(),
        n.hex(),
    ),
    "oversized bookkeeping": lambda d, n, k, good: ({**good, "notes": "n" * 70_000}, n.hex()),
    "another image's quote": lambda d, n, k, good: (
        {**good, "quote": base64.b64encode(d.srv.quote_for(n, k, _OTHER_IMAGE)).decode()},
        n.hex(),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_refusals_answer_alike_through_the_fast_path(doors: Doors, case: str) -> None:
    def send(client: httpx.Client) -> httpx.Response:
        key = AgentKey.generate()
        nonce = get_nonce(client)
        body, nonce_hex = CASES[case](doors, nonce, key, _attestation_body(doors, nonce, key))
        return _post(body, nonce_hex)(client)

    status, _headers, body = _same(doors.both(send))
    assert status in {401, 403, 422}, body
    assert body["reason"] and body["message"]
    assert doors.passed_on == []


@pytest.mark.parametrize(
    ("case", "request_body", "content_type"),
    [
        ("not JSON", b"{not json", "application/json"),
        ("a JSON array", b"[]", "application/json"),
        ("no quote field", b'{"public_key": "AAAA"}', "application/json"),
        ("quote not a string", b'{"quote": 5, "public_key": "AAAA"}', "application/json"),
        ("not UTF-8", b'{"quote": "\xff"}', "application/json"),
        ("a form", b"quote=AAAA", "application/x-www-form-urlencoded"),
        ("no content type", b"{}", None),
        ("an empty body", b"", "application/json"),
    ],
)
def test_unusual_bodies_go_to_the_framework(
    doors: Doors, case: str, request_body: bytes, content_type: str | None
) -> None:
    status, _headers, body = _same(doors.both(_post(request_body, "ab" * 32, content_type)))
    assert status == 422, (case, body)
    assert body["reason"] == "request_invalid"
    assert doors.passed_on == [f"POST {BOOT_ATTESTATION_PATH}"]


def test_bodies_over_the_limit_and_chunked_bodies_go_to_the_framework(doors: Doors) -> None:
    big = _post(b'{"quote": "' + b"A" * 600_000 + b'"}', "ab" * 32)
    status, _headers, body = _same(doors.both(big))
    assert (status, body["reason"]) == (422, "quote_too_large")

    def chunked(client: httpx.Client) -> httpx.Response:
        parts = iter([b'{"quote": "AAAA", ', b'"public_key": "AAAA"}'])
        return client.post(
            BOOT_ATTESTATION_PATH,
            content=parts,
            headers={"Content-Type": "application/json", NONCE_HEADER: "ab" * 32},
        )

    status, _headers, body = _same(doors.both(chunked))
    assert (status, body["reason"]) == (401, "nonce_unknown")
    assert doors.passed_on == [f"POST {BOOT_ATTESTATION_PATH}"] * 2


def test_database_unavailable_answers_alike_with_retry_after(doors: Doors) -> None:
    # Closed, with no probe due for an hour: every attestation fails fast.
    gate = DatabaseGate(probe_interval_seconds=3600)
    gate.failed(waited_seconds=60.0)
    doors.srv.app.state.ctx.database_gate = gate
    key = AgentKey.generate()
    nonce = get_nonce(doors.srv.client)
    status, headers, body = _same(
        doors.both(_post(_attestation_body(doors, nonce, key), nonce.hex()))
    )
    assert (status, body["reason"]) == (503, "database_unavailable")
    assert int(headers["retry-after"]) >= 1
    assert doors.passed_on == []
