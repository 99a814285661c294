"""A boot storm client: many complete boots at once over HTTP/1.1, and what came back.

Every boot is what an agent does: GET /servers/nonce, a fresh HPKE key pair, a simulated
quote over nonce || SHA-256(public key), POST /servers/boot/attestation, and opening the
sealed key. All boots start together (one connection each, kept alive for both requests);
a boot's latency runs from its first byte sent to its key opened. The client speaks
HTTP/1.1 directly on asyncio streams: a general HTTP client costs more CPU per request
than the server spends on it, on a machine the server shares.
"""

from __future__ import annotations

import asyncio
import base64
import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from tdx_boot_attest.tdxsim.profile import Profile
from tdx_boot_attest.tdxsim.state import SimState
from tests.support.boot_client import AgentKey, expected_report_data

# An answer later than this counts as lost (no agent waits longer for one request).
REQUEST_TIMEOUT_SECONDS = 120.0


class Lost(Exception):
    """A request got no answer: the connection was reset or closed, or it timed out."""


@dataclass
class Outcome:
    """One boot's result."""

    latency: float | None = None  # set for a released key that opened
    error: str | None = None  # "<status> <reason>" of a refusal, or what failed
    lost: bool = False
    nonce: str | None = None


@dataclass
class Storm:
    """Results of one storm."""

    outcomes: list[Outcome] = field(default_factory=list)
    wall_seconds: float = 0.0


async def _request(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    method: str,
    target: str,
    headers: dict[str, str],
    body: bytes = b"",
) -> tuple[int, bytes]:
    lines = [f"{method} {target} HTTP/1.1", "Host: storm", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    try:
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise Lost(f"{method} {target}: {type(exc).__name__}") from None
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    try:
        return status, await reader.readexactly(length)
    except (OSError, asyncio.IncompleteReadError) as exc:
        raise Lost(f"{method} {target}: body {type(exc).__name__}") from None


async def one_boot(
    port: int, sim: SimState, start: asyncio.Event, passphrase: bytes, profile: Profile
) -> Outcome:
    """A complete boot on one kept-alive connection."""
    await start.wait()
    outcome = Outcome()
    started = time.perf_counter()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        return Outcome(lost=True, error=f"connect: {type(exc).__name__}")
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
            status, body = await _request(
                reader, writer, method="GET", target="/servers/nonce", headers={}
            )
            if status != 200:
                outcome.error = f"nonce {status} {json.loads(body).get('reason')}"
                return outcome
            nonce_hex = json.loads(body)["nonce"]
            outcome.nonce = nonce_hex
            nonce = bytes.fromhex(nonce_hex)
            key = AgentKey.generate()
            quote = sim.make_quote(expected_report_data(nonce, key), profile)
            request = json.dumps(
                {"quote": base64.b64encode(quote).decode(), "public_key": key.public_b64}
            ).encode()
            status, body = await _request(
                reader,
                writer,
                method="POST",
                target="/servers/boot/attestation",
                headers={"Content-Type": "application/json", "X-Chutes-Nonce": nonce_hex},
                body=request,
            )
        answer = json.loads(body)
        if status != 200:
            outcome.error = f"attestation {status} {answer.get('reason')}"
            return outcome
        if key.open(answer["sealed_key"], nonce) != passphrase:
            outcome.error = "released key is not the passphrase"
            return outcome
        outcome.latency = time.perf_counter() - started
    except (Lost, TimeoutError) as exc:
        outcome.lost = True
        outcome.error = str(exc) or "timed out"
    finally:
        writer.close()
    return outcome


async def storm(port: int, sim: SimState, count: int, passphrase: bytes) -> Storm:
    """Start ``count`` boots together against 127.0.0.1:``port``; wait for all."""
    start = asyncio.Event()
    # The measured VM, read once (make_quote would read its file for every quote).
    profile = Profile.default()
    tasks = [
        asyncio.create_task(one_boot(port, sim, start, passphrase, profile)) for _ in range(count)
    ]
    await asyncio.sleep(0)
    began = time.perf_counter()
    start.set()
    outcomes = await asyncio.gather(*tasks)
    return Storm(list(outcomes), time.perf_counter() - began)


def _accepted_rows_per_nonce(database_url: str) -> Counter[str]:
    engine = sa.create_engine(sa.make_url(database_url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT nonce FROM boot_attestations WHERE verdict = 'accepted'")
            )
            return Counter(str(row[0]) for row in rows)
    finally:
        engine.dispose()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summarise(result: Storm, database_url: str, count: int) -> dict[str, Any]:
    """The storm's figures, with double releases counted from answers and audit rows."""
    latencies = [o.latency for o in result.outcomes if o.latency is not None]
    released = Counter(o.nonce for o in result.outcomes if o.latency is not None)
    rows = _accepted_rows_per_nonce(database_url)
    double = sum(1 for n in released.values() if n > 1) + sum(1 for n in rows.values() if n > 1)
    errors = Counter(o.error for o in result.outcomes if o.error is not None and not o.lost)
    lost = Counter(o.error for o in result.outcomes if o.lost)
    return {
        "boots": count,
        "released": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "lost": sum(lost.values()),
        "lost_kinds": dict(lost),
        "double_releases": double,
        "wall_s": round(result.wall_seconds, 3),
        "boots_per_s": round(len(latencies) / result.wall_seconds, 1),
        "p50_s": round(percentile(latencies, 0.5), 3) if latencies else None,
        "p99_s": round(percentile(latencies, 0.99), 3) if latencies else None,
        "max_s": round(max(latencies), 3) if latencies else None,
        "mean_s": round(statistics.fmean(latencies), 3) if latencies else None,
    }


def run_storm(port: int, sim: SimState, count: int, passphrase: bytes) -> Storm:
    """``storm`` on its own event loop (uvloop: the client spends less of the machine's
    CPU, which the server under test shares). Raises nothing of its own."""
    import uvloop

    return uvloop.run(storm(port, sim, count, passphrase))
