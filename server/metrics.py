"""Prometheus metrics of one server (its own registry, so several apps can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Counters and histograms exported at /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.attestations = Counter(
            "tdx_attest_attestations",
            "Attestation attempts by verdict and reason",
            ["kind", "verdict", "reason"],
            registry=self.registry,
        )
        self.attestation_latency = Histogram(
            "tdx_attest_attestation_seconds",
            "Time to handle one attestation request",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.verification_latency = Histogram(
            "tdx_attest_dcap_verification_seconds",
            "Time spent in DCAP quote verification",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.collateral_age = Gauge(
            "tdx_attest_collateral_age_seconds",
            "Seconds since the cached collateral was issued, by FMSPC",
            ["fmspc", "ca"],
            registry=self.registry,
        )
        self.collateral_remaining = Gauge(
            "tdx_attest_collateral_remaining_seconds",
            "Seconds until the cached collateral's nextUpdate, by FMSPC",
            ["fmspc", "ca"],
            registry=self.registry,
        )
        self.collateral_fetches = Counter(
            "tdx_attest_collateral_fetches",
            "Collateral fetches from the PCCS/PCS by result: fetched, failed, unknown_platform",
            ["result"],
            registry=self.registry,
        )
        self.collateral_fetches_in_flight = Gauge(
            "tdx_attest_collateral_fetches_in_flight",
            "Collateral fetches running now (at most one per FMSPC and CA)",
            registry=self.registry,
        )
        self.database_unavailable = Counter(
            "tdx_attest_database_unavailable",
            "Boot attestations answered database_unavailable: after trying the database "
            "(tried) or at once while it keeps requests waiting (failed_fast)",
            ["how"],
            registry=self.registry,
        )
        self.nonces_issued = Counter(
            "tdx_attest_nonces_issued", "Nonces issued", ["kind"], registry=self.registry
        )
