"""The initramfs file list's import walk reaches through the tdx_boot_attest namespace
package: the standard library that requests imports lazily (http.cookies) comes along."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from tests.vm.images import REPO_ROOT


def load_hook_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "tdx_runtime_files", REPO_ROOT / "initramfs-hooks" / "tdx_runtime_files.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_walk_follows_the_agent_into_requests(tmp_path: Path) -> None:
    hook = load_hook_module()
    # An installed layout: tdx_boot_attest/ (no __init__.py) holding the agent.
    namespace = tmp_path / "tdx_boot_attest"
    namespace.mkdir()
    (namespace / "agent").symlink_to(REPO_ROOT / "agent")
    modules = hook._stdlib_modules(["tdx_boot_attest.agent.http_client"], [namespace])
    assert "tdx_boot_attest.agent.http_client" in modules
    assert "requests" in modules
    assert "http.cookies" in modules
