"""Benchmark: ``tdx-boot-agent keyscript`` next to a minimal POSIX shell + curl script.

Both do the same steps against the same local verifier (SQLite, simulator trust root) and
the same ``tdxsim mount`` FUSE configfs-tsm, interleaved in one run: GET a nonce, write
64 bytes of REPORTDATA to inblob, read outblob, POST the quote. The agent also makes an
HPKE key pair and opens the sealed key; the shell script posts a fixed public key and
throws the answer away. Wall and CPU time come from each child's own accounting
(wait4), peak RSS likewise; the agent's import time from ``python -X importtime``.
Ends with one JSON line of all figures.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.agent_e2e import (  # noqa: E402
    AGENT_EXE,
    agent_argv,
    new_passphrase,
    write_agent_config,
)
from tests.support.live_server import simulator_server  # noqa: E402
from tests.support.memory import memory_directory  # noqa: E402
from tests.support.tsm_mount import mounted_tsm  # noqa: E402

RUNS = int(os.environ.get("AGENT_BENCH_RUNS", "15"))
TARGET_RATIO = 1.5

# The same protocol steps in POSIX sh with curl (and coreutils for hex and base64).
SHELL_CLIENT = r"""#!/bin/sh
# usage: boot.sh URL TSM_REPORT_DIR PUBLIC_KEY_B64 PUBLIC_KEY_SHA256_HEX
set -eu
url=$1 tsm=$2 pub=$3 pubhash=$4
nonce=$(curl -sf "$url/servers/nonce" | sed -n 's/.*"nonce":"\([0-9a-f]*\)".*/\1/p')
entry="$tsm/shell-$$"
mkdir "$entry"
trap 'rmdir "$entry"' EXIT
printf '%s%s' "$nonce" "$pubhash" | tr 'a-f' 'A-F' | basenc --base16 -d > "$entry/inblob"
quote=$(base64 -w0 < "$entry/outblob")
printf '{"quote":"%s","public_key":"%s","kem":"x25519"}' "$quote" "$pub" |
  curl -sf -o /dev/null -H "Content-Type: application/json" -H "X-Chutes-Nonce: $nonce" \
    --data-binary @- "$url/servers/boot/attestation"
"""


GNU_TIME = "/usr/bin/time"
AGENT_VENV = REPO_ROOT / "build" / "bench" / "agent-venv"


def installed_agent_python() -> Path:
    """The interpreter of a venv holding the agent as an image installs it; raises on failure.

    The development venv's editable install adds a path finder to every start-up (about
    25 ms here) that an image never pays, so the agent is measured from a regular,
    non-editable install with only its own dependencies, rebuilt when its sources change.
    """
    sources = [*sorted((REPO_ROOT / "agent").glob("*.py")), REPO_ROOT / "setup.cfg"]
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()
    python = AGENT_VENV / "bin" / "python"
    stamp = AGENT_VENV / ".sources-sha256"
    if not python.exists() or not stamp.exists() or stamp.read_text() != digest:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(AGENT_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--no-cache-dir", str(REPO_ROOT)],
            check=True,
        )
        stamp.write_text(digest)
    return python


def measure(argv: list[str], rss_file: Path) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds user+sys, peak RSS KiB) of one child; raises on failure.

    CPU comes from wait4 (the child and every process it waited for). Peak RSS comes
    from GNU time, which runs the command as its own child: a child forked straight
    from this (large) process would report this process's RSS as its peak.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(
        [GNU_TIME, "-q", "-f", "%M", "-o", str(rss_file), *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {err.decode()[-500:]}")
    return wall, usage.ru_utime + usage.ru_stime, int(rss_file.read_text().split()[-1])


def import_ms(python: Path, argv: list[str]) -> dict[str, float]:
    """Import time (ms) from ``python -X importtime``: total and by top-level package.

    Each top-level import's cumulative time is charged to its package; "total" is their sum
    (interpreter start-up imports such as site included).
    """
    result = subprocess.run(
        [str(python), "-X", "importtime", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    by_package: dict[str, float] = {"total": 0.0}
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S+)$", line)
        if match:  # depth 0: no indentation before the module name
            package = match.group(2).split(".")[0]
            by_package[package] = by_package.get(package, 0.0) + int(match.group(1)) / 1000
            by_package["total"] += int(match.group(1)) / 1000
    return by_package


def main() -> int:
    """Set up, run both clients RUNS times interleaved, print figures and one JSON line."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from tdx_boot_attest.tdxsim.state import SimState

    agent_python = installed_agent_python()
    agent_exe = agent_python.with_name("tdx-boot-agent")
    with tempfile.TemporaryDirectory(prefix="agent-bench-") as tmp:
        root = Path(tmp)
        state_dir = root / "sim"
        SimState.init(state_dir, seed=11)
        mount = root / "tsm"
        passphrase = new_passphrase()
        with (
            mounted_tsm(state_dir, mount),
            simulator_server(root, state_dir) as server,
            memory_directory() as run_dir,
        ):
            golden = root / "golden.quote"
            subprocess.run(
                [str(AGENT_EXE), "quote", "--tsm-root", str(mount / "report"),
                 "--out", str(golden), "--kmsg", "/nonexistent"],
                check=True,
                capture_output=True,
            )  # fmt: skip
            server.add_image("golden", passphrase=passphrase, quote_file=golden)
            conf = write_agent_config(
                root / "agent.conf",
                url=server.base_url,
                tsm_root=mount / "report",
                identity_path=run_dir / "tdx-boot-attest" / "identity.key",
            )
            cmdline = root / "cmdline"
            cmdline.write_text("quiet\n")
            agent = [str(agent_exe), *agent_argv("keyscript", conf, cmdline, root / "no-kmsg")[1:]]
            script = root / "boot.sh"
            script.write_text(SHELL_CLIENT)
            public = X25519PrivateKey.generate().public_key().public_bytes_raw()
            shell = [
                "/bin/sh", str(script), server.base_url, str(mount / "report"),
                base64.b64encode(public).decode(), hashlib.sha256(public).hexdigest(),
            ]  # fmt: skip
            rss = root / "rss"
            measure(agent, rss)  # warm caches (page cache, .pyc, the server's first request)
            measure(shell, rss)
            agent_runs, shell_runs, floor_runs, requests_runs = [], [], [], []
            for _ in range(RUNS):
                agent_runs.append(measure(agent, rss))
                shell_runs.append(measure(shell, rss))
                # Floors for context: the interpreter alone, and with requests imported.
                floor_runs.append(measure([str(agent_python), "-c", "pass"], rss))
                requests_runs.append(measure([str(agent_python), "-c", "import requests"], rss))
            help_runs = [
                import_ms(agent_python, ["-m", "tdx_boot_attest.agent", "--help"]) for _ in range(5)
            ]
            keyscript_runs = [
                import_ms(agent_python, ["-m", "tdx_boot_attest.agent", *agent[1:]])
                for _ in range(5)
            ]

    def med(runs: list[tuple[float, float, int]], index: int) -> float:
        return float(statistics.median(run[index] for run in runs))

    def import_median(runs: list[dict[str, float]], package: str) -> float:
        return round(statistics.median(run.get(package, 0.0) for run in runs), 1)

    packages = ("requests", "cryptography", "tenacity", "agent", "site")
    breakdown = {name: import_median(keyscript_runs, name) for name in packages}

    wall_ratio = round(med(agent_runs, 0) / med(shell_runs, 0), 2)
    figures: dict[str, object] = {
        "bench": "agent_boot",
        "runs": RUNS,
        "agent_wall_s": round(med(agent_runs, 0), 4),
        "shell_wall_s": round(med(shell_runs, 0), 4),
        "wall_ratio": wall_ratio,
        "agent_cpu_s": round(med(agent_runs, 1), 4),
        "shell_cpu_s": round(med(shell_runs, 1), 4),
        "cpu_ratio": round(med(agent_runs, 1) / med(shell_runs, 1), 2),
        "python_startup_wall_s": round(med(floor_runs, 0), 4),
        "python_import_requests_wall_s": round(med(requests_runs, 0), 4),
        "agent_import_ms_help": import_median(help_runs, "total"),
        "agent_import_ms_keyscript": import_median(keyscript_runs, "total"),
        "agent_import_ms_by_package": breakdown,
        "agent_peak_rss_kib": max(run[2] for run in agent_runs),
        "shell_peak_rss_kib": max(run[2] for run in shell_runs),
        "target_wall_ratio": TARGET_RATIO,
    }
    figures["meets_target"] = wall_ratio <= TARGET_RATIO
    print(f"runs (interleaved)        {RUNS}")
    print(f"agent keyscript wall      {med(agent_runs, 0):.3f} s (median)")
    print(f"shell + curl wall         {med(shell_runs, 0):.3f} s (median)")
    print(f"wall ratio                {figures['wall_ratio']} (target <= {TARGET_RATIO})")
    print(f"agent CPU                 {med(agent_runs, 1):.3f} s (median)")
    print(f"shell CPU                 {med(shell_runs, 1):.3f} s (median)")
    print(f"CPU ratio                 {figures['cpu_ratio']}")
    print(f"python -c pass wall       {med(floor_runs, 0):.3f} s (median, for context)")
    print(f"python -c 'import requests' {med(requests_runs, 0):.3f} s (median, for context)")
    print(f"agent import time --help  {figures['agent_import_ms_help']} ms")
    print(f"agent import time run     {figures['agent_import_ms_keyscript']} ms")
    print("  of which                 " + ", ".join(f"{k} {v} ms" for k, v in breakdown.items()))
    print(f"agent peak RSS            {figures['agent_peak_rss_kib']} KiB")
    print(f"shell peak RSS            {figures['shell_peak_rss_kib']} KiB")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
