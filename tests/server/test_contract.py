"""The app's OpenAPI document against the Servers API contract.

Exactly the contract's paths and methods (all nine operations, boot ones included), each
documented parameter in the right place, each documented body field, each documented
status. The contract is read from beside the repository when present, and an in-repo
copy (tests/assets/servers_api_contract.json) keeps the test standing alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tdx_boot_attest.server.app import create_app
from tdx_boot_attest.server.settings import Settings
from tests.conftest import REPO_ROOT, SHARED_DIR
from tests.support.api_contract import Operation, parse_contract

CONTRACT_FILE = SHARED_DIR / "servers-api-reference.txt"
CONTRACT_COPY = REPO_ROOT / "tests" / "assets" / "servers_api_contract.json"


def contract_copy() -> list[Operation]:
    return [Operation.from_json(item) for item in json.loads(CONTRACT_COPY.read_text())]


@pytest.fixture
def openapi(tmp_path: Path) -> dict[str, Any]:
    """The OpenAPI document of a freshly built app (the schema needs no database rows)."""
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/api.sqlite", dev_mode=True))
    try:
        return app.openapi()
    finally:
        app.state.ctx.engine.dispose()


def operations_of(openapi: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): spec
        for path, methods in openapi["paths"].items()
        for method, spec in methods.items()
    }


def resolve(openapi: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = openapi["components"]["schemas"][name]
    return schema


def check_against(openapi: dict[str, Any], contract: list[Operation]) -> None:
    actual = operations_of(openapi)
    assert set(actual) == {(op.method, op.path) for op in contract}
    for op in contract:
        spec = actual[(op.method, op.path)]
        where = f"{op.method} {op.path}"
        parameters = {p["name"].lower(): p for p in spec.get("parameters", [])}
        for name, required in op.parameters.items():
            assert name.lower() in parameters, f"{where}: parameter {name} missing"
            param = parameters[name.lower()]
            expected_in = "path" if f"{{{name}}}" in op.path else "header"
            assert param["in"] == expected_in, f"{where}: {name} is in {param['in']}"
            assert param.get("required", False) == required, f"{where}: {name} required?"
        if op.body:
            content = spec["requestBody"]["content"]["application/json"]["schema"]
            body = resolve(openapi, content)
            for name, required in op.body.items():
                assert name in body["properties"], f"{where}: body field {name} missing"
                assert (name in body.get("required", [])) == required, f"{where}: {name}"
        else:
            assert "requestBody" not in spec, f"{where} takes no body"
        for status in op.statuses:
            assert str(status) in spec["responses"], f"{where}: status {status} undocumented"


def test_openapi_matches_the_in_repo_contract(openapi: dict[str, Any]) -> None:
    contract = contract_copy()
    assert len(contract) == 9
    check_against(openapi, contract)


def test_in_repo_copy_equals_the_contract() -> None:
    if not CONTRACT_FILE.is_file():
        pytest.skip(f"the API contract is not beside the repository ({CONTRACT_FILE})")
    parsed = parse_contract(CONTRACT_FILE.read_text(encoding="utf-8"))
    assert [op.to_json() for op in parsed] == [op.to_json() for op in contract_copy()]


def test_openapi_matches_the_contract_file(openapi: dict[str, Any]) -> None:
    if not CONTRACT_FILE.is_file():
        pytest.skip(f"the API contract is not beside the repository ({CONTRACT_FILE})")
    check_against(openapi, parse_contract(CONTRACT_FILE.read_text(encoding="utf-8")))


def test_gpus_are_a_list_of_node_args(openapi: dict[str, Any]) -> None:
    create = operations_of(openapi)[("POST", "/servers/")]
    body = resolve(openapi, create["requestBody"]["content"]["application/json"]["schema"])
    gpus = body["properties"]["gpus"]
    assert gpus["type"] == "array"
    node_args = resolve(openapi, gpus["items"])
    assert node_args["title"] == "NodeArgs"
    assert {"uuid", "name", "memory", "clock_rate", "device_index"} <= set(node_args["required"])


def test_the_checker_notices_a_missing_operation(openapi: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(openapi))
    del broken["paths"]["/servers/{server_id}/attestation/status"]
    with pytest.raises(AssertionError):
        check_against(broken, contract_copy())


def test_the_checker_notices_a_missing_header(openapi: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(openapi))
    spec = broken["paths"]["/servers/"]["get"]
    spec["parameters"] = [p for p in spec["parameters"] if p["name"] != "Authorization"]
    with pytest.raises(AssertionError, match="Authorization"):
        check_against(broken, contract_copy())


def test_parser_reads_rows_with_split_type_cells(tmp_path: Path) -> None:
    text = (
        'curl -X POST "https://api.example/servers/x"\n'
        "| Parameter | Type | Required | Description |\n|---|---|---|---|\n"
        "| X-A | string | null | No | |\n| a_id | string | Yes | |\n"
        "Request Body\n| Field | Type | Required | Description |\n|---|---|---|---|\n"
        "| quote | string | Yes | Base64 |\n"
        "| Status Code | Description |\n|---|---|\n| 201 | ok |\n"
    )
    (op,) = parse_contract(text)
    assert (op.method, op.path) == ("POST", "/servers/x")
    assert op.parameters == {"X-A": False, "a_id": True}
    assert op.body == {"quote": True}
    assert op.statuses == [201]
