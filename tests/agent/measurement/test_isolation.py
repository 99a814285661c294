"""The calculator stays out of the agent's boot path and pulls in nothing but the stdlib."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT


def _modules_after(statement: str) -> set[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    output = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
        check=True, timeout=120,
    ).stdout  # fmt: skip
    return set(json.loads(output))


def test_the_agent_boot_path_does_not_import_the_calculator() -> None:
    loaded = _modules_after("import tdx_boot_attest.agent.cli, tdx_boot_attest.agent.boot")
    assert not {m for m in loaded if m.startswith("tdx_boot_attest.agent.measurement")}


def test_the_calculator_imports_only_the_stdlib_and_the_agents_pure_modules() -> None:
    loaded = _modules_after(
        "import tdx_boot_attest.agent.measurement.manifest, tdx_boot_attest.agent.measurement.tdvf"
    )
    project = {".".join(m.split(".")[:2]) for m in loaded if m.startswith("tdx_boot_attest.")}
    assert not project & {"tdx_boot_attest.server", "tdx_boot_attest.tdxsim"}
    assert not {m.split(".")[0] for m in loaded} & {"requests", "cryptography"}
    prefix = "tdx_boot_attest.agent."
    agent_modules = {m for m in loaded if m.startswith(prefix) and m != prefix + "measurement"}
    assert {m for m in agent_modules if not m.startswith(prefix + "measurement.")} <= {
        "tdx_boot_attest.agent.eventlog",
        "tdx_boot_attest.agent.protocol",
    }
