"""Authenticode cross-check: the signed Debian kernel's SHA-256 digest as osslsigncode
reports it (both the digest in the signature and the one it calculates)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tdx_boot_attest.agent.measurement.pe import authenticode_digest
from tests.vm.images import VmSetupError, find_kernel


def test_sha256_digest_equals_osslsigncode_on_the_signed_debian_kernel() -> None:
    tool = shutil.which("osslsigncode")
    try:
        kernel = find_kernel()
    except VmSetupError as exc:
        pytest.skip(str(exc))
    if tool is None:
        pytest.skip("osslsigncode missing: run scripts/install-system-deps.sh vm")
    # Exit status 1 only says the signer's chain is not trusted here; the digests print.
    output = subprocess.run(
        [tool, "verify", "-in", str(kernel.vmlinuz)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    text = output.stdout + output.stderr
    current = re.search(r"Current message digest\s*:\s*([0-9A-F]{64})", text)
    calculated = re.search(r"Calculated message digest\s*:\s*([0-9A-F]{64})", text)
    assert current and calculated, text
    ours = authenticode_digest(kernel.vmlinuz.read_bytes(), "sha256").hex().upper()
    assert ours == calculated.group(1) == current.group(1)
