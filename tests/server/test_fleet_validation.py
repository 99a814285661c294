"""A 422 ``request_invalid`` (or a quote reason) for every malformed field, never a 500."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.support.fleet_env import FleetEnv, decoded, gpu, server_args
from tests.support.miner_keys import MinerKey


def without(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != key}


def with_gpu_field(field: str, value: Any) -> dict[str, Any]:
    args = server_args("node-1")
    args["gpus"][0] = {**gpu(0, "node-1"), field: value}
    return args


def without_gpu_field(field: str) -> dict[str, Any]:
    args = server_args("node-1")
    args["gpus"][0] = without(gpu(0, "node-1"), field)
    return args


def with_gpus(*gpus: dict[str, Any]) -> dict[str, Any]:
    return {**server_args("x"), "gpus": list(gpus)}


REQUIRED_GPU_FIELDS = ("uuid", "name", "memory", "clock_rate", "device_index")
THREADS = "max_threads_per_processor"
KERNELS = "concurrent_kernels"
BAD_SERVER_ARGS: list[tuple[str, Any, str]] = [
    ("body not an object", ["node-1"], "body"),
    ("id missing", without(server_args("x"), "id"), "id"),
    ("id empty", {**server_args("x"), "id": ""}, "id"),
    ("id too long", {**server_args("x"), "id": "n" * 101}, "id"),
    ("id with a slash", {**server_args("x"), "id": "node/1"}, "id"),
    ("id with spaces", {**server_args("x"), "id": "node 1"}, "id"),
    ("id reserved nonce", {**server_args("x"), "id": "nonce"}, "id"),
    ("id reserved boot", {**server_args("x"), "id": "Boot"}, "id"),
    ("id not a string", {**server_args("x"), "id": 12}, "id"),
    ("host missing", without(server_args("x"), "host"), "host"),
    ("host a name", {**server_args("x"), "host": "node1.example"}, "host"),
    ("host empty", {**server_args("x"), "host": ""}, "host"),
    ("host too long", {**server_args("x"), "host": "1" * 65}, "host"),
    ("host with port", {**server_args("x"), "host": "10.0.0.1:80"}, "host"),
    ("name empty", {**server_args("x"), "name": ""}, "name"),
    ("name too long", {**server_args("x"), "name": "n" * 256}, "name"),
    ("gpus missing", without(server_args("x"), "gpus"), "gpus"),
    ("gpus empty", {**server_args("x"), "gpus": []}, "gpus"),
    ("gpus not a list", {**server_args("x"), "gpus": gpu(0)}, "gpus"),
    ("gpus too many", {**server_args("x"), "gpus": [gpu(i) for i in range(65)]}, "gpus"),
    ("gpu not an object", {**server_args("x"), "gpus": ["GPU-1"]}, "gpus.0"),
    ("gpus duplicate uuid", with_gpus(gpu(0), {**gpu(0), "device_index": 1}), "uuid"),
    ("gpus duplicate index", with_gpus(gpu(0), {**gpu(1), "device_index": 0}), "device_index"),
    *[(f"gpu {f} missing", without_gpu_field(f), f) for f in REQUIRED_GPU_FIELDS],
    ("name with NUL", {**server_args("x"), "name": "rack\x001"}, "name"),
    ("name with newline", {**server_args("x"), "name": "rack\n1"}, "name"),
    ("gpu uuid with NUL", with_gpu_field("uuid", "GPU-\x00"), "uuid"),
    ("gpu name with control", with_gpu_field("name", "H100\x1b[2J"), "name"),
    ("gpu uuid empty", with_gpu_field("uuid", ""), "uuid"),
    ("gpu uuid too long", with_gpu_field("uuid", "u" * 129), "uuid"),
    ("gpu name empty", with_gpu_field("name", ""), "name"),
    ("gpu name not a string", with_gpu_field("name", 5), "name"),
    ("gpu memory zero", with_gpu_field("memory", 0), "memory"),
    ("gpu memory negative", with_gpu_field("memory", -1), "memory"),
    ("gpu memory huge", with_gpu_field("memory", 2**60), "memory"),
    ("gpu memory text", with_gpu_field("memory", "lots"), "memory"),
    ("gpu memory fractional", with_gpu_field("memory", 1.5), "memory"),
    ("gpu clock_rate zero", with_gpu_field("clock_rate", 0), "clock_rate"),
    ("gpu clock_rate negative", with_gpu_field("clock_rate", -5.0), "clock_rate"),
    ("gpu clock_rate text", with_gpu_field("clock_rate", "fast"), "clock_rate"),
    ("gpu clock_rate huge", with_gpu_field("clock_rate", 1e300), "clock_rate"),
    ("gpu device_index negative", with_gpu_field("device_index", -1), "device_index"),
    ("gpu device_index huge", with_gpu_field("device_index", 1024), "device_index"),
    ("gpu device_index text", with_gpu_field("device_index", "first"), "device_index"),
    ("gpu major negative", with_gpu_field("major", -1), "major"),
    ("gpu minor text", with_gpu_field("minor", "x"), "minor"),
    ("gpu processors negative", with_gpu_field("processors", -3), "processors"),
    ("gpu sxm not bool", with_gpu_field("sxm", "maybe"), "sxm"),
    ("gpu max_threads negative", with_gpu_field(THREADS, -1), THREADS),
    ("gpu concurrent_kernels not bool", with_gpu_field(KERNELS, "x"), KERNELS),
    ("gpu ecc not bool", with_gpu_field("ecc", [True]), "ecc"),
    # NodeArgs is strict: no coercion of text to numbers or flags, nor between them.
    ("gpu memory numeric text", with_gpu_field("memory", "85899345920"), "memory"),
    ("gpu memory a flag", with_gpu_field("memory", True), "memory"),
    ("gpu clock_rate numeric text", with_gpu_field("clock_rate", "1980.0"), "clock_rate"),
    ("gpu device_index a float", with_gpu_field("device_index", 0.0), "device_index"),
    ("gpu major numeric text", with_gpu_field("major", "9"), "major"),
    ("gpu processors a flag", with_gpu_field("processors", False), "processors"),
    ("gpu sxm yes", with_gpu_field("sxm", "yes"), "sxm"),
    ("gpu ecc one", with_gpu_field("ecc", 1), "ecc"),
    ("gpu concurrent_kernels true text", with_gpu_field(KERNELS, "true"), KERNELS),
    ("gpu uuid with a space", with_gpu_field("uuid", "GPU-ab cd"), "uuid"),
    ("gpu uuid not ascii", with_gpu_field("uuid", "GPU-\u00e9"), "uuid"),
    ("gpus same uuid in two cases", with_gpus(
        {**gpu(0), "uuid": "GPU-ab12"}, {**gpu(1), "uuid": "gpu-AB12"}), "uuid"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "field"),
    [pytest.param(payload, field, id=name) for name, payload, field in BAD_SERVER_ARGS],
)
def test_malformed_registration(fleet: FleetEnv, alice: MinerKey, payload: Any, field: str) -> None:
    response = fleet.signed("POST", "/servers/", alice, payload)
    assert response.status_code == 422, response.text
    body = decoded(response)
    assert body["reason"] == "request_invalid"
    assert field in body["message"]


def test_body_that_is_not_json(fleet: FleetEnv, alice: MinerKey) -> None:
    body = b"id=node-1"
    headers = {**alice.headers(fleet.clock.unix, body), "Content-Type": "application/json"}
    response = fleet.client().post("/servers/", content=body, headers=headers)
    assert response.status_code == 422
    assert decoded(response)["reason"] == "request_invalid"


@pytest.mark.parametrize(
    "path",
    [
        "/servers/" + "n" * 101,
        "/servers/" + "n" * 101 + "/nonce",
        "/servers/" + "n" * 101 + "/attestation/status",
        "/servers/-leading-dash",
        "/servers/bad%20id/nonce",
    ],
)
def test_malformed_server_id_in_path(fleet: FleetEnv, alice: MinerKey, path: str) -> None:
    response = fleet.signed("GET", path, alice)
    assert response.status_code == 422, response.text
    assert decoded(response)["reason"] == "request_invalid"
    assert "server_id" in decoded(response)["message"]


# A v4 TDX quote header (version 4, ECDSA-P256 key, TEE type 0x81) and nothing else of use.
TRUNCATED_TDX_QUOTE = (
    (4).to_bytes(2, "little")
    + (2).to_bytes(2, "little")
    + (0x81).to_bytes(4, "little")
    + bytes(100)
)


@pytest.fixture
def registered(fleet: FleetEnv, alice: MinerKey) -> FleetEnv:
    fleet.boot()
    assert fleet.register(alice, "node-1").status_code == 201
    return fleet


@pytest.mark.parametrize(
    ("payload", "reason", "fragment"),
    [
        pytest.param({}, "request_invalid", "quote", id="quote missing"),
        pytest.param({"quote": 5}, "request_invalid", "quote", id="quote not a string"),
        pytest.param({"quote": "not base64!"}, "quote_malformed", "base64", id="not base64"),
        pytest.param({"quote": ""}, "quote_malformed", "empty", id="quote empty"),
        pytest.param(
            {"quote": base64.b64encode(TRUNCATED_TDX_QUOTE).decode()},
            "quote_malformed",
            "quote",
            id="garbage bytes",
        ),
        pytest.param(
            {"quote": base64.b64encode(bytes(70 * 1024)).decode()},
            "quote_too_large",
            "larger",
            id="quote too large",
        ),
    ],
)
def test_malformed_runtime_attestation(
    registered: FleetEnv, alice: MinerKey, payload: Any, reason: str, fragment: str
) -> None:
    response = registered.signed("POST", "/servers/node-1/attestation", alice, payload)
    assert response.status_code == 422, response.text
    assert decoded(response)["reason"] == reason
    assert fragment in decoded(response)["message"]


def test_sgx_quote_is_not_tdx(registered: FleetEnv, alice: MinerKey) -> None:
    sgx_header = (3).to_bytes(2, "little") + (2).to_bytes(2, "little") + bytes(4) + bytes(600)
    payload = {"quote": base64.b64encode(sgx_header).decode()}
    response = registered.signed("POST", "/servers/node-1/attestation", alice, payload)
    assert (response.status_code, decoded(response)["reason"]) == (403, "not_tdx")
