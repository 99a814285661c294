"""The whole boot story for the agent's end-to-end tests, the demo and the benchmark.

Real pieces only: a simulator state, ``tdxsim mount`` (FUSE configfs-tsm), the real
verifier (``tdx-attest-server serve`` on SQLite with the simulator's trust root), a
LUKS2 file made with cryptsetup, and the ``tdx-boot-agent`` console script run as a
subprocess. While the agent runs, every process's argv and environment are sampled so
a test can prove the key never appears there.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

AGENT_EXE = Path(sys.executable).with_name("tdx-boot-agent")
REPO_ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE_PREFIX = b"agent-e2e-key-"


def new_passphrase() -> bytes:
    """A random LUKS passphrase with a recognisable prefix (for leak scans)."""
    return PASSPHRASE_PREFIX + secrets.token_hex(16).encode()


def make_luks_image(path: Path, passphrase: bytes, size_mib: int = 20) -> None:
    """A LUKS2 file keyed with ``passphrase`` (read from stdin; fast pbkdf2 settings)."""
    with path.open("wb") as handle:
        handle.truncate(size_mib * 1024 * 1024)
    subprocess.run(
        ["cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode",
         "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
         "--key-file=-", str(path)],
        input=passphrase,
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip


def passphrase_opens(image: Path, key: bytes) -> bool:
    """True when ``key`` opens a key slot of ``image`` (cryptsetup --test-passphrase)."""
    result = subprocess.run(
        ["cryptsetup", "open", "--test-passphrase", "--key-file=-", str(image)],
        input=key,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return result.returncode == 0


def write_agent_config(
    path: Path,
    *,
    url: str,
    tsm_root: Path,
    volumes: Sequence[tuple[str, Path | str]] = (),
    deadline: float = 30,
    on_failure: str = "prompt",
    actions_log: Path | None = None,
    ca_bundle: Path | None = None,
    device_timeout: float = 5,
    extra_boot: str = "",
    kem: str | None = None,
    event_log: Path | None = None,
    identity_path: Path | None = None,
) -> Path:
    """An agent.conf for tests: --test-passphrase cryptsetup, recorded failure actions.

    ``event_log`` is where the agent reads the firmware event log (CCEL);
    ``identity_path`` where this "VM" keeps its per-boot identity key (it must be on
    tmpfs: see tests.support.memory); the agent's default, /run, may be on disk here.
    """
    lines = ["[server]", f"url = {url}"]
    if url.startswith("http://"):
        lines.append("allow_http = true")
    if ca_bundle is not None:
        lines.append(f"ca_bundle = {ca_bundle}")
    if kem is not None:
        lines.append(f"kem = {kem}")
    if identity_path is not None:
        lines += ["[identity]", f"path = {identity_path}"]
    lines += ["[tsm]", f"root = {tsm_root}", "[boot]", f"deadline = {deadline}"]
    lines += [f"on_failure = {on_failure}", f"device_timeout = {device_timeout}"]
    lines += ["connect_timeout = 2", "read_timeout = 20"]
    lines += ["cryptsetup = cryptsetup open --test-passphrase", "check_mapper = false"]
    if actions_log is not None:
        for action in ("poweroff", "reboot"):
            lines.append(f"{action}_command = /bin/sh -c 'echo {action} >> {actions_log}'")
    if extra_boot:
        lines.append(extra_boot)
    if event_log is not None:
        lines += ["[eventlog]", f"path = {event_log}"]
    for name, device in volumes:
        lines += [f"[volume {name}]", f"device = {device}"]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class ProcessSampler:
    """Reads /proc/*/cmdline and /proc/*/environ in a loop, remembering any hit of a secret."""

    secret: bytes
    interval: float = 0.005
    hits: list[str] = field(default_factory=list)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                for name in ("cmdline", "environ"):
                    try:
                        with open(f"/proc/{pid}/{name}", "rb") as handle:
                            data = handle.read()
                    except OSError:
                        continue
                    if self.secret in data:
                        self.hits.append(f"/proc/{pid}/{name}")
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> ProcessSampler:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


@dataclass
class AgentRun:
    """What one agent process did."""

    returncode: int
    stdout: bytes
    stderr: bytes
    seconds: float
    argv_hits: list[str]
    samples: int

    @property
    def err(self) -> str:
        """stderr as text."""
        return self.stderr.decode("utf-8", "replace")


def agent_argv(command: str, config: Path, cmdline: Path, kmsg: Path, *extra: str) -> list[str]:
    """The agent's command line (the console script, as an initramfs runs it)."""
    return [
        str(AGENT_EXE), command, "--config", str(config), "--cmdline", str(cmdline),
        "--kmsg", str(kmsg), *extra,
    ]  # fmt: skip


def run_agent(
    argv: Sequence[str],
    secret: bytes,
    *,
    env: dict[str, str] | None = None,
    stdout_to: subprocess.Popen[bytes] | None = None,
    timeout: float = 120,
) -> AgentRun:
    """Run the agent to completion while sampling /proc for ``secret``."""
    started = time.monotonic()
    with ProcessSampler(secret) as sampler:
        proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        out, err = proc.communicate(timeout=timeout)
    return AgentRun(
        proc.returncode, out, err, time.monotonic() - started, sampler.hits, sampler.samples
    )


def files_containing(root: Path, secret: bytes) -> list[Path]:
    """Every regular file under ``root`` whose bytes contain ``secret`` (mounts skipped)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not os.path.ismount(os.path.join(dirpath, d))]
        for name in filenames:
            path = Path(dirpath, name)
            try:
                if path.is_file() and secret in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found


@contextmanager
def background(
    argv: Sequence[str], log: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` in the background with output to ``log``; terminate it on exit."""
    with log.open("ab") as handle:
        proc = subprocess.Popen(list(argv), stdout=handle, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
