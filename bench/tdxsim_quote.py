"""Benchmark: the simulator's costs: init a platform, make quotes, verify them, parse them.

Times ``SimState.init``, ``make_quote`` (v4, v5 with a TDX 1.5 body), dcap-qvl
verification of a simulated quote against the simulator's root, ``tdxsim.abi`` parse +
re-serialise, and the wall time of ``tdxsim profile show`` as a process (CLI start-up).
Ends with one JSON line of all figures (milliseconds, medians).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import dcap_qvl  # noqa: E402

from tdx_boot_attest.tdxsim import abi  # noqa: E402
from tdx_boot_attest.tdxsim.state import SimState  # noqa: E402


def median_ms(fn: Callable[[], object], runs: int) -> float:
    """Median wall time of ``fn`` over ``runs`` calls, in milliseconds."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> int:
    """Run the measurements and print them; returns 0. Raises on a simulator failure."""
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(10_000))
        figures["init_ms"] = median_ms(
            lambda: SimState.init(Path(tmp) / f"s{next(counter)}", seed=1), 10
        )
        state = SimState.load(Path(tmp) / "s0")
        report_data = bytes(range(64))
        figures["quote_v4_ms"] = median_ms(lambda: state.make_quote(report_data), 200)
        figures["quote_v5_ms"] = median_ms(lambda: state.make_quote(report_data, version=5), 200)
        quote = state.make_quote(report_data)
        collateral = dcap_qvl.QuoteCollateralV3.from_json(state.collateral_json)
        now = int(time.time())
        figures["verify_ms"] = median_ms(
            lambda: dcap_qvl.verify_with_root_ca(quote, collateral, state.root_ca_der, now), 200
        )
        figures["parse_roundtrip_ms"] = median_ms(
            lambda: abi.parse_tdx_quote(quote).to_bytes(), 500
        )
        cli = [sys.executable, "-m", "tdx_boot_attest.tdxsim", "profile", "show"]
        figures["cli_start_ms"] = median_ms(
            lambda: subprocess.run(cli, check=True, capture_output=True), 5
        )
        figures["quote_bytes"] = float(len(quote))
    for name, value in figures.items():
        print(f"{name:20} {value:10.2f}")
    print(json.dumps({"bench": "tdxsim_quote", **{k: round(v, 3) for k, v in figures.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
