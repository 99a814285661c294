"""DCAP verification helpers for tests: run dcap-qvl against a simulated or real trust root."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import dcap_qvl

from tdx_boot_attest.tdxsim.state import SimState


def verify(quote: bytes, collateral_json: str, root_ca_der: bytes, now: int) -> Any:
    """dcap-qvl's verdict for ``quote`` (a VerifiedReport); raises ValueError on refusal."""
    collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_json)
    return dcap_qvl.verify_with_root_ca(quote, collateral, root_ca_der, now)


def refusal(quote: bytes, collateral_json: str, root_ca_der: bytes, now: int) -> str:
    """The reason dcap-qvl refuses ``quote``; fails the test if it is accepted."""
    try:
        collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_json)
        report = dcap_qvl.verify_with_root_ca(quote, collateral, root_ca_der, now)
    except ValueError as exc:
        return str(exc)
    raise AssertionError(f"quote was accepted with status {report.status}")


def dcap_cpu_per_verify(quotes: list[bytes], sim: SimState) -> float:
    """CPU seconds per dcap_qvl.verify_with_root_ca over ``quotes``, in this process: the
    machine's speed at the work every boot must do, for benchmarks to compare against."""
    collateral = dcap_qvl.QuoteCollateralV3.from_json(sim.collateral_json)
    now = int(dt.datetime.now(dt.UTC).timestamp())
    root = sim.root_ca_der
    started = time.process_time()
    for quote in quotes:
        dcap_qvl.verify_with_root_ca(quote, collateral, root, now)
    return (time.process_time() - started) / len(quotes)
