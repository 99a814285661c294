"""Runtime attestation and miner authentication cost, in process (ASGI, no sockets).

For SQLite and PostgreSQL: registers a simulated server, then runs N runtime
attestations (signed GET nonce, simulated quote binding the boot's identity key and its
signature, signed POST attestation) and N signed
status reads through the app. Reports p50/p99 latency of each, and the CPU cost of one
sr25519 signature check and one SS58 decode alone. Ends with one JSON line.

Usage: python bench/fleet_runtime.py [N]   (default 200; PostgreSQL at TDX_ATTEST_TEST_PG_URL)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tdx_boot_attest.server.auth.hotkey import hotkey_public_key
from tdx_boot_attest.server.auth.signing import parse_signature, signature_is_valid, signing_message
from tdx_boot_attest.server.db.migrate import upgrade
from tdx_boot_attest.tdxsim.state import SimState
from tests.support.databases import create_postgres_database, drop_postgres_database
from tests.support.fleet_env import make_fleet_env
from tests.support.miner_keys import MinerKey

WARMUP = 10


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def timed(samples: list[float], action: Any) -> Any:
    started = time.perf_counter()
    result = action()
    samples.append(time.perf_counter() - started)
    return result


def bench_database(kind: str, url: str, sim: SimState, workdir: Path, count: int) -> dict[str, Any]:
    upgrade(url)
    env = make_fleet_env(url, sim, workdir / kind)
    try:
        miner = env.add_miner(MinerKey.from_seed(1))
        env.boot()
        assert env.register(miner, "bench-node").status_code == 201
        attest: list[float] = []
        status: list[float] = []
        for round_number in range(WARMUP + count):
            env.clock.advance(1)
            nonce_ms: list[float] = []
            nonce = timed(nonce_ms, lambda: env.signed("GET", "/servers/bench-node/nonce", miner))
            body = env.runtime_body("bench-node", nonce.json()["nonce"])
            post_ms: list[float] = []
            reply = timed(
                post_ms,
                lambda b=body: env.signed("POST", "/servers/bench-node/attestation", miner, b),
            )
            if reply.status_code != 200:
                raise RuntimeError(f"runtime attestation refused: {reply.text}")
            read: list[float] = []
            timed(read, lambda: env.signed("GET", "/servers/bench-node/attestation/status", miner))
            if round_number >= WARMUP:
                attest.append(nonce_ms[0] + post_ms[0])
                status.append(read[0])
    finally:
        env.close()
    return {
        "database": kind,
        "attestations": count,
        "attest_p50_ms": round(percentile(attest, 0.5) * 1000, 2),
        "attest_p99_ms": round(percentile(attest, 0.99) * 1000, 2),
        "status_p50_ms": round(percentile(status, 0.5) * 1000, 2),
        "status_p99_ms": round(percentile(status, 0.99) * 1000, 2),
    }


def bench_signature(count: int) -> dict[str, float]:
    key = MinerKey.from_seed(2)
    message = signing_message(key.hotkey, "1700000000", b'{"quote":"..."}')
    signature = parse_signature(key.sign(1700000000, b'{"quote":"..."}'))
    started = time.process_time()
    for _ in range(count):
        assert signature_is_valid(key.public_key, message, signature)
    verify = (time.process_time() - started) / count
    started = time.process_time()
    for _ in range(count):
        hotkey_public_key(key.hotkey)
    decode = (time.process_time() - started) / count
    return {"sr25519_verify_us": round(verify * 1e6, 1), "ss58_decode_us": round(decode * 1e6, 1)}


def main(argv: list[str]) -> int:
    count = int(argv[1]) if len(argv) > 1 else 200
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        workdir = Path(tmp)
        sim = SimState.init(workdir / "sim", seed=12)
        results.append(
            bench_database("sqlite", f"sqlite:///{workdir}/bench.sqlite", sim, workdir, count)
        )
        pg_url = create_postgres_database()
        try:
            results.append(bench_database("postgres", pg_url, sim, workdir, count))
        finally:
            drop_postgres_database(pg_url)
    crypto = bench_signature(2000)
    for row in results:
        print(
            f"{row['database']:9} runtime attestation p50 {row['attest_p50_ms']:.2f} ms "
            f"p99 {row['attest_p99_ms']:.2f} ms   status p50 {row['status_p50_ms']:.2f} ms "
            f"p99 {row['status_p99_ms']:.2f} ms"
        )
    print(
        f"sr25519 verify {crypto['sr25519_verify_us']:.1f} us   "
        f"SS58 decode {crypto['ss58_decode_us']:.1f} us"
    )
    print(json.dumps({"benchmark": "fleet_runtime", "results": results, "crypto": crypto}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
