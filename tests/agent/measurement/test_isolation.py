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
    loaded = _modules_after("import agent.cli, agent.boot")
    assert not {m for m in loaded if m.startswith("agent.measurement")}


def test_the_calculator_imports_only_the_stdlib_and_the_agents_pure_modules() -> None:
    loaded = _modules_after("import agent.measurement.manifest, agent.measurement.tdvf")
    ours = {m.split(".")[0] for m in loaded} & {"server", "tdxsim", "requests", "cryptography"}
    assert not ours
    agent_modules = {m for m in loaded if m.startswith("agent.") and m != "agent.measurement"}
    assert {m for m in agent_modules if not m.startswith("agent.measurement.")} <= {
        "agent.eventlog",
        "agent.protocol",
    }
