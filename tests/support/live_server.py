"""Start the real verifier (`tdx-attest-server serve`, uvicorn) as a subprocess for tests.

Usage::

    with live_server(tmp_path, database_url, trust_root=sim.path / "root_ca.der",
                     collateral_file=sim.path / "collateral.json") as server:
        server.add_image("golden", passphrase=b"...", quote_file=...)   # or profile=...
        httpx.get(server.base_url + "/servers/nonce")

Settings travel as TDX_ATTEST_* variables; the database is migrated and images are added
with the admin CLI, as an operator would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

SERVER_EXE = Path(sys.executable).with_name("tdx-attest-server")
RTMR_NAMES = ("rtmr0", "rtmr1", "rtmr2", "rtmr3")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LiveServer:
    """A running server process and the handles tests use to administer it."""

    base_url: str
    env: dict[str, str]
    workdir: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    def cli(
        self, *args: str, stdin: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``tdx-attest-server ARGS`` with this server's settings."""
        return run_cli(self.env, *args, stdin=stdin, check=check, log_path=self.log_path)

    def add_image(
        self,
        name: str,
        *,
        passphrase: bytes,
        quote_file: Path | None = None,
        measurements: Mapping[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        """Register an image from a golden quote file or explicit ``--mrtd/--rtmrN`` values."""
        pw_file = self.workdir / f"passphrase-{name}"
        pw_file.write_bytes(passphrase)
        pw_file.chmod(0o600)
        args = ["image", "add", name, "--passphrase-file", str(pw_file)]
        if quote_file is not None:
            args += ["--from-quote", str(quote_file)]
        for key, value in (measurements or {}).items():
            args += [f"--{key.replace('_', '-')}", value]
        self.cli(*args, *extra_args)
        pw_file.unlink()

    def import_collateral(self, path: Path) -> None:
        """`tdx-attest-server collateral import PATH`."""
        self.cli("collateral", "import", str(path))

    def logs(self) -> str:
        """Everything the server and the admin CLI printed so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def run_cli(
    env: Mapping[str, str],
    *args: str,
    stdin: bytes | None = None,
    check: bool = True,
    log_path: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the admin CLI; its output is appended to ``log_path`` (for log scans)."""
    result = subprocess.run(
        [str(SERVER_EXE), *args],
        env=dict(env),
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if log_path is not None:
        with log_path.open("a", encoding="utf-8") as handle:
            handle.write(f"$ tdx-attest-server {' '.join(args)}\n{result.stdout}{result.stderr}")
    if check and result.returncode != 0:
        raise RuntimeError(
            f"tdx-attest-server {' '.join(args)} failed ({result.returncode}): {result.stderr}"
        )
    return result


def server_env(
    workdir: Path,
    database_url: str,
    *,
    trust_root: Path | None = None,
    pccs_url: str | None = None,
    dev_mode: bool = False,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """TDX_ATTEST_* settings for a test server; creates a master key unless dev mode."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TDX_ATTEST_")}
    env["TDX_ATTEST_DATABASE_URL"] = database_url
    env["TDX_ATTEST_LOG_LEVEL"] = "DEBUG"
    # An address nothing listens on: collateral must come from the import unless a PCS is given.
    env["TDX_ATTEST_PCCS_URL"] = pccs_url or f"http://127.0.0.1:{free_port()}"
    if trust_root is not None:
        env["TDX_ATTEST_TRUST_ROOT"] = str(trust_root)
    if dev_mode:
        env["TDX_ATTEST_DEV_MODE"] = "1"
    else:
        key_file = workdir / "master.key"
        if not key_file.exists():
            run_cli(env, "master-key", "generate", str(key_file))
        env["TDX_ATTEST_MASTER_KEY_FILE"] = str(key_file)
    env.update(extra or {})
    return env


@contextmanager
def live_server(
    workdir: Path,
    database_url: str,
    *,
    trust_root: Path | None = None,
    pccs_url: str | None = None,
    collateral_file: Path | None = None,
    dev_mode: bool = False,
    extra_env: Mapping[str, str] | None = None,
    start_timeout: float = 30.0,
    workers: int = 1,
) -> Iterator[LiveServer]:
    """Migrate, optionally import collateral, start `tdx-attest-server serve`, wait, stop."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = server_env(
        workdir,
        database_url,
        trust_root=trust_root,
        pccs_url=pccs_url,
        dev_mode=dev_mode,
        extra=extra_env,
    )
    log_path = workdir / "server.log"
    run_cli(env, "migrate", log_path=log_path)
    if collateral_file is not None:
        run_cli(env, "collateral", "import", str(collateral_file), log_path=log_path)
    port = free_port()
    log = log_path.open("ab")
    process = subprocess.Popen(
        [
            str(SERVER_EXE),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = LiveServer(f"http://127.0.0.1:{port}", env, workdir, log_path, process)
    try:
        _wait_ready(server, start_timeout)
        yield server
    finally:
        _stop(process)
        log.close()


def simulator_server(root: Path, state_dir: Path) -> AbstractContextManager[LiveServer]:
    """A live server on SQLite under ``root/server`` that trusts the simulator at ``state_dir``.

    The simulator's collateral is imported, so no PCCS is needed. Raises RuntimeError when
    the server does not start.
    """
    return live_server(
        root / "server",
        f"sqlite:///{root / 'server' / 'verifier.db'}",
        trust_root=state_dir / "root_ca.der",
        collateral_file=state_dir / "collateral.json",
    )


def _wait_ready(server: LiveServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.logs()}")
        try:
            if httpx.get(server.base_url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server did not become ready in {timeout} s:\n{server.logs()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
