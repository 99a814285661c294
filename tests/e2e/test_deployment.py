"""The verifier's deployment artifacts: the systemd unit, the compose replica set, the image.

No container engine runs in CI, so the compose file is checked for its structure and the
replica set it describes (two verifiers sharing PostgreSQL and the master key, behind one
address) is started as processes behind a round-robin TCP proxy.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tdx_boot_attest.server.sealing import load_master_key
from tdx_boot_attest.tdxsim.state import SimState
from tests.support.boot_client import AgentKey, expected_report_data, get_nonce, post_quote
from tests.support.databases import create_postgres_database, drop_postgres_database
from tests.support.live_server import live_server

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "tdx-attest-server.service"
SERVER_EXE = Path(sys.executable).parent / "tdx-attest-server"
PASSPHRASE = b"luks-pw-replicas-5c1d"
HARDENING = {
    "DynamicUser": "yes",
    "ProtectSystem": "strict",
    "NoNewPrivileges": "yes",
    "PrivateTmp": "yes",
    "ProtectHome": "yes",
    "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "SystemCallFilter": "@system-service",
    "StateDirectory": "tdx-attest-server",
    "LoadCredential": "master.key:/etc/tdx-attest/master.key",
}


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_the_server_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (scripts/install-system-deps.sh test)")
    # verify insists that ExecStart's program exists: point it at this checkout's command.
    unit = tmp_path / UNIT.name
    unit.write_text(
        UNIT.read_text().replace("/opt/tdx-attest-server/bin/tdx-attest-server", str(SERVER_EXE))
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # Unknown or misspelt keys are only warnings: the unit must give none.
    assert result.stderr.strip() == ""


def test_the_server_unit_is_hardened() -> None:
    settings = unit_settings(UNIT.read_text())
    for key, value in HARDENING.items():
        assert value in settings.get(key, []), key
    assert settings["Environment"] == ["TDX_ATTEST_MASTER_KEY_FILE=%d/master.key"]
    assert "User" not in settings


def test_the_server_reads_its_key_from_the_credentials_directory(tmp_path: Path) -> None:
    # The unit's Environment= line, expanded as systemd would, is the path the CLI reads.
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    key = credentials / "master.key"
    generated = subprocess.run(
        [str(SERVER_EXE), "master-key", "generate", str(key)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    key.chmod(0o400)
    (line,) = unit_settings(UNIT.read_text())["Environment"]
    path = Path(line.partition("=")[2].replace("%d", str(credentials)))
    assert load_master_key(path, dev_mode=False) is not None


def test_the_compose_file_describes_two_replicas_behind_one_port() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML parses the compose file")
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "migrate", "verifier-1", "verifier-2", "proxy"} <= services.keys()
    published = sorted(name for name, service in services.items() if service.get("ports"))
    assert published == ["proxy"]
    for name in ("verifier-1", "verifier-2"):
        service = services[name]
        assert service["read_only"] is True
        assert service["user"].split(":")[0] not in {"0", "root"}
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["secrets"][0]["target"] == "master.key"
        assert service["environment"]["TDX_ATTEST_DATABASE_URL"].startswith("postgresql://")
        assert service["build"]["dockerfile"] == "deploy/Containerfile"
    assert services["migrate"]["command"] == ["migrate"]
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert "server verifier-1:8000" in nginx and "server verifier-2:8000" in nginx
    assert (DEPLOY / services["proxy"]["volumes"][0].split(":")[0]).exists()


def test_the_container_image_runs_unprivileged_with_a_health_check() -> None:
    lines = [line.strip() for line in (DEPLOY / "Containerfile").read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    health = next(i for i, line in enumerate(lines) if line.startswith("HEALTHCHECK"))
    assert "/healthz" in " ".join(lines[health : health + 2])
    assert "TDX_ATTEST_MASTER_KEY_FILE=/run/secrets/master.key" in " ".join(lines)
    assert any("'.[server]'" in line for line in lines)


class RoundRobinProxy:
    """One listening address; each new connection goes to the next backend in turn."""

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self.served: list[int] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.address[0]}:{self.address[1]}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            index = len(self.served) % len(self.backends)
            self.served.append(index)
            backend = socket.create_connection(self.backends[index])
            for source, target in ((client, backend), (backend, client)):
                threading.Thread(target=self._pipe, args=(source, target), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()


@contextlib.contextmanager
def round_robin(backends: list[str]) -> Iterator[RoundRobinProxy]:
    parsed = [httpx.URL(url) for url in backends]
    proxy = RoundRobinProxy([(url.host, url.port or 80) for url in parsed])
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.mark.slow
@pytest.mark.postgres
def test_two_replicas_behind_one_address_serve_a_boot_and_share_nonces(tmp_path: Path) -> None:
    sim = SimState.init(tmp_path / "sim", seed=21)
    database_url = create_postgres_database()
    try:
        with ExitStack() as stack:
            first = stack.enter_context(
                live_server(
                    tmp_path / "replica-1", database_url,
                    trust_root=sim.path / "root_ca.der",
                    collateral_file=sim.path / "collateral.json",
                )
            )  # fmt: skip
            shared_key = first.env["TDX_ATTEST_MASTER_KEY_FILE"]
            second = stack.enter_context(
                live_server(
                    tmp_path / "replica-2", database_url,
                    trust_root=sim.path / "root_ca.der",
                    collateral_file=sim.path / "collateral.json",
                    extra_env={"TDX_ATTEST_MASTER_KEY_FILE": shared_key},
                )
            )  # fmt: skip
            golden = tmp_path / "golden.quote"
            golden.write_bytes(sim.make_quote(bytes(64)))
            first.add_image("golden", passphrase=PASSPHRASE, quote_file=golden)
            proxy = stack.enter_context(round_robin([first.base_url, second.base_url]))

            def fresh_client() -> httpx.Client:
                # A new connection per request, so the proxy alternates the replicas.
                return stack.enter_context(httpx.Client(base_url=proxy.url, timeout=60))

            nonce = get_nonce(fresh_client())
            key = AgentKey.generate()
            quote = sim.make_quote(expected_report_data(nonce, key))
            answer = post_quote(fresh_client(), quote, key, nonce.hex())
            assert answer.status_code == 200, answer.text
            assert key.open(answer.json()["sealed_key"], nonce) == PASSPHRASE
            replay = post_quote(fresh_client(), quote, key, nonce.hex())
            assert replay.status_code != 200
            assert replay.json()["reason"] == "nonce_used"
            # Nonce from replica 1, attestation by replica 2, the replay refused by replica 1.
            assert proxy.served == [0, 1, 0]
    finally:
        drop_postgres_database(database_url)
