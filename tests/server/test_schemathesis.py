"""Property-based API testing with schemathesis against the app's own OpenAPI document.

Every operation gets generated requests, each sent twice: as generated (so the
authentication parser sees arbitrary headers) and signed by a registered miner with a
real sr25519 key (so the request reaches validation and the handlers; a registered
server is substituted for half of the generated ids). No response may be a 5xx, carry an
undocumented status, or violate its documented schema. Examples are bounded so the run
stays well under a minute per database.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from tests.support.fleet_env import FleetEnv
from tests.support.fleet_fixtures import FleetFactory
from tests.support.miner_keys import MinerKey

AUTH_HEADERS = {"x-chutes-hotkey", "x-chutes-signature", "x-chutes-nonce", "authorization"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
REGISTERED_SERVER = "node-1"
EXAMPLES_PER_OPERATION = 12


@pytest.fixture
def fuzz_env(make_fleet: FleetFactory) -> Iterator[tuple[FleetEnv, MinerKey]]:
    env = make_fleet()
    miner = env.add_miner(MinerKey.from_seed(404))
    env.boot()
    assert env.register(miner, REGISTERED_SERVER).status_code == 201
    yield env, miner


def _operations(env: FleetEnv) -> list[Any]:
    schema = schemathesis.openapi.from_dict(env.app.openapi())
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the schema has an operation it cannot read: {result}"
        operations.append(result.ok())
    return operations


def _send(env: FleetEnv, case: Any, sign_as: MinerKey | None) -> Any:
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    headers = {k: str(v) for k, v in (kwargs.get("headers") or {}).items()}
    if "json" in kwargs:
        body = json.dumps(kwargs["json"]).encode()
        headers["Content-Type"] = "application/json"
    else:
        raw = kwargs.get("content", kwargs.get("data"))
        body = raw.encode() if isinstance(raw, str) else (raw or b"")
    url = kwargs["url"]
    if sign_as is not None:
        headers = {k: v for k, v in headers.items() if k.lower() not in AUTH_HEADERS}
        if not url.endswith(("/servers/nonce", "/servers/boot/attestation")):
            headers.update(sign_as.headers(env.clock.unix, body))
            # Signatures are single-use; a moving clock keeps messages distinct.
            env.clock.advance(1)
    return env.client().request(
        kwargs["method"], url, content=body or None, headers=headers, params=kwargs.get("params")
    )


def _exercise(env: FleetEnv, miner: MinerKey, case: Any, seen: set[int]) -> None:
    unsigned = _send(env, case, None)
    case.validate_response(unsigned, checks=CHECKS)
    path_parameters = case.path_parameters or {}
    # Half of the generated ids are swapped for the registered server, so the handlers
    # run past "not found" (DELETE keeps its generated id: the server must stay).
    swap = "server_id" in path_parameters and case.method.upper() != "DELETE"
    if swap and zlib.crc32(str(path_parameters["server_id"]).encode()) % 2 == 0:
        path_parameters["server_id"] = REGISTERED_SERVER
    signed = _send(env, case, miner)
    case.validate_response(signed, checks=CHECKS)
    seen.add(signed.status_code)


@pytest.mark.slow
def test_api_never_fails_or_breaks_its_schema(fuzz_env: tuple[FleetEnv, MinerKey]) -> None:
    env, miner = fuzz_env
    operations = _operations(env)
    assert len(operations) == 9
    seen: set[int] = set()
    for operation in operations:
        strategy = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )

        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            _exercise(env, miner, case, seen)

        run()
    # The signed requests got past authentication into validation and the handlers.
    assert {200, 404, 422} <= seen, seen
