"""Boot attestations per second against the real server, and its CPU cost next to dcap-qvl's.

For SQLite and PostgreSQL: starts `tdx-attest-server serve` (uvicorn, loopback), registers the
simulator's image, runs N complete boots (GET nonce, simulated quote, POST attestation) over
real HTTP, then verifies the same quotes with dcap-qvl alone in this process. Reports p50/p99
latency, boots/s, the server process's CPU time per boot (from /proc/PID/stat; also its kernel
part: sockets, database files) and its ratio to dcap-qvl's CPU time per verification (target
<= 2.0), as the median over batches (dcap-qvl measured right after each batch, under the same
machine load). Ends with one JSON line.

Usage: python bench/server_boot.py [N]   (default 300; PostgreSQL at TDX_ATTEST_TEST_PG_URL)
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tdx_boot_attest.tdxsim.state import SimState
from tests.support.boot_client import AgentKey, expected_report_data, post_quote
from tests.support.databases import create_postgres_database, drop_postgres_database
from tests.support.dcap import dcap_cpu_per_verify
from tests.support.live_server import live_server

WARMUP = 20
BATCHES = 5
TARGET_RATIO = 2.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_user_system_seconds(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process, in seconds: user space vs kernel (sockets, files)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def one_boot(client: httpx.Client, sim: SimState) -> tuple[float, bytes]:
    """A complete boot; returns its latency (excluding the simulated TDX module) and quote."""
    key = AgentKey.generate()
    started = time.perf_counter()
    response = client.get("/servers/nonce")
    response.raise_for_status()
    nonce = bytes.fromhex(response.json()["nonce"])
    nonce_latency = time.perf_counter() - started
    quote = sim.make_quote(expected_report_data(nonce, key))
    started = time.perf_counter()
    reply = post_quote(client, quote, key, nonce.hex())
    latency = nonce_latency + time.perf_counter() - started
    if reply.status_code != 200:
        raise RuntimeError(f"boot refused: {reply.text}")
    key.open(reply.json()["sealed_key"], nonce)
    return latency, quote


def bench_database(
    kind: str, database_url: str, sim: SimState, workdir: Path, count: int
) -> dict[str, Any]:
    """Run ``count`` boots in batches; each batch's server CPU is set against dcap-qvl's CPU
    on the same quotes measured right after it, so both see the same machine load."""
    golden = workdir / "golden.quote"
    golden.write_bytes(sim.make_quote(bytes(64)))
    batch = max(1, count // BATCHES)
    latencies: list[float] = []
    server_cpu: list[float] = []
    server_system: list[float] = []
    dcap_cpu: list[float] = []
    wall = 0.0
    with (
        live_server(
            workdir / kind,
            database_url,
            trust_root=sim.path / "root_ca.der",
            collateral_file=sim.path / "collateral.json",
            extra_env={"TDX_ATTEST_LOG_LEVEL": "INFO"},
        ) as server,
        httpx.Client(base_url=server.base_url, timeout=30) as client,
    ):
        server.add_image("bench", passphrase=b"bench-passphrase", quote_file=golden)
        warm = [one_boot(client, sim)[1] for _ in range(WARMUP)]
        dcap_cpu_per_verify(warm, sim)
        pid = server.process.pid
        for _ in range(BATCHES):
            quotes: list[bytes] = []
            user_before, system_before = process_user_system_seconds(pid)
            started = time.perf_counter()
            for _ in range(batch):
                latency, quote = one_boot(client, sim)
                latencies.append(latency)
                quotes.append(quote)
            wall += time.perf_counter() - started
            user_after, system_after = process_user_system_seconds(pid)
            server_cpu.append((user_after + system_after - user_before - system_before) / batch)
            server_system.append((system_after - system_before) / batch)
            dcap_cpu.append(dcap_cpu_per_verify(quotes, sim))
    ratios = [s / d for s, d in zip(server_cpu, dcap_cpu, strict=True)]
    boots = batch * BATCHES
    return {
        "database": kind,
        "boots": boots,
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 3),
        "boots_per_s_serial": round(boots / sum(latencies), 1),
        "boots_per_s_wall": round(boots / wall, 1),
        "server_cpu_ms_per_boot": round(statistics.median(server_cpu) * 1000, 3),
        "server_kernel_cpu_ms_per_boot": round(statistics.median(server_system) * 1000, 3),
        "dcap_cpu_ms_per_verify": round(statistics.median(dcap_cpu) * 1000, 3),
        "cpu_ratio": round(statistics.median(ratios), 2),
        "cpu_ratio_per_batch": [round(r, 2) for r in ratios],
    }


def main(argv: list[str]) -> int:
    count = int(argv[1]) if len(argv) > 1 else 300
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        workdir = Path(tmp)
        sim = SimState.init(workdir / "sim", seed=11)
        results.append(
            bench_database("sqlite", f"sqlite:///{workdir}/bench.sqlite", sim, workdir, count)
        )
        pg_url = create_postgres_database()
        try:
            results.append(bench_database("postgres", pg_url, sim, workdir, count))
        finally:
            drop_postgres_database(pg_url)
    for row in results:
        verdict = "ok" if row["cpu_ratio"] <= TARGET_RATIO else "OVER TARGET"
        print(
            f"{row['database']:9} p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms  "
            f"{row['boots_per_s_serial']:.0f} boots/s  "
            f"server CPU {row['server_cpu_ms_per_boot']:.2f} ms/boot  "
            f"dcap-qvl {row['dcap_cpu_ms_per_verify']:.2f} ms/verify  ratio {row['cpu_ratio']:.2f} "
            f"(target <= {TARGET_RATIO}: {verdict})"
        )
    print(
        json.dumps(
            {"benchmark": "server_boot", "target_cpu_ratio": TARGET_RATIO, "results": results}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
