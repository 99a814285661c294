"""Suite-wide rules: under CI a skipped test is a failure, never a silent pass.

Property-based tests never fail on time (no per-example deadline: a loaded machine is
slow, not wrong) and, under CI, draw the same examples on every run, so a red CI run can
be reproduced and never comes from the draw alone. Locally the draw stays random.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support.memory import memory_directory


def _shared_fixture_plugins() -> tuple[str, ...]:
    """Fixtures shared by several test folders: the two databases, the simulated fleet.

    They need the verifier's dependencies, which the agent's oldest-dependency job
    (scripts/test-oldest-deps.sh: tests/agent with the agent's dependencies alone) does
    not install; its tests use none of these fixtures, and a test that did would fail
    there with "fixture not found", never pass by accident.
    """
    if all(importlib.util.find_spec(name) for name in ("sqlalchemy", "fastapi")):
        return ("tests.support.databases", "tests.support.fleet_fixtures")
    return ()


pytest_plugins = _shared_fixture_plugins()

settings.register_profile("local", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"
VECTORS_DIR = SHARED_DIR / "vectors"

_skipped: list[str] = []


def running_in_ci() -> bool:
    """True when the suite runs under CI (CI=true), where nothing may be skipped."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


settings.load_profile("ci" if running_in_ci() else "local")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append(f"{report.nodeid}: {reason}")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if running_in_ci() and _skipped:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("=", "CI forbids skipped tests", red=True)
            for line in _skipped:
                reporter.write_line(f"SKIPPED IN CI: {line}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """The real DCAP vectors shipped beside the repository; skips when absent."""
    if not (VECTORS_DIR / "tdx_quote").is_file():
        pytest.skip(f"real DCAP vectors not found at {VECTORS_DIR}")
    return VECTORS_DIR


@pytest.fixture
def memory_dir() -> Iterator[Path]:
    """A private directory on tmpfs (for the agent's identity key), removed afterwards."""
    with memory_directory() as path:
        yield path
