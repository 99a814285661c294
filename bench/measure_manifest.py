"""Benchmark: computing a measurement manifest for a 10 MB kernel and a 40 MB initrd.

The baseline, measured in the same run, is the least any calculator must do: SHA-384
over the kernel twice (its file digest and its Authenticode digest) and over the initrd
once (its file digest is the stub's tag digest). The ratio says how much the calculator
adds on top of hashing. Ends with one
JSON line (milliseconds, medians, and the ratio).
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tdx_boot_attest.agent.eventlog import parse_event_log  # noqa: E402
from tdx_boot_attest.agent.measurement.manifest import compute_manifest  # noqa: E402
from tdx_boot_attest.agent.measurement.memory import GIB  # noqa: E402
from tdx_boot_attest.agent.measurement.platform import capture_platform  # noqa: E402
from tests.agent.measurement.builders import ASSETS, bzimage  # noqa: E402

KERNEL_BYTES = 10 * 1024 * 1024
INITRD_BYTES = 40 * 1024 * 1024


def median_ms(fn: Callable[[], object], runs: int) -> float:
    """Median wall time of ``fn`` over ``runs`` calls, in milliseconds."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> int:
    """Run the measurement and print it; returns 0. Raises on a calculator failure."""
    kernel = bzimage(payload=bytes(range(256)) * (KERNEL_BYTES // 256))
    initrd = b"070701" + bytes(INITRD_BYTES - 6)
    log = (ASSETS / "qemu-direct-boot-initrd.ccel").read_bytes()
    platform = capture_platform(
        "bench", mrtd=bytes(48), rtmrs=parse_event_log(log).replay(), event_log=log
    )

    def baseline() -> None:
        for data in (kernel, kernel, initrd):
            hashlib.sha384(data).digest()

    figures = {
        "hash_baseline_ms": median_ms(baseline, 5),
        "manifest_ms": median_ms(
            lambda: compute_manifest(kernel, initrd, "console=ttyS0 ro", 2 * GIB, platform), 5
        ),
    }
    figures["manifest_over_baseline"] = figures["manifest_ms"] / figures["hash_baseline_ms"]
    print(f"hashing alone (baseline)     {figures['hash_baseline_ms']:8.1f} ms")
    print(f"compute_manifest             {figures['manifest_ms']:8.1f} ms")
    print(f"ratio                        {figures['manifest_over_baseline']:8.2f}x")
    print(json.dumps({"bench": "measure_manifest", **figures}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
