"""The whole story on one machine: a simulated TDX VM unlocks a LUKS2 disk end to end.

Run by ``make demo``. Uses nothing but this project's commands, exactly as an operator
and an image builder would: ``tdxsim`` (the simulated platform, its measured boot and its
configfs-tsm FUSE device with the firmware event log), ``tdx-attest-server`` (the
verifier on SQLite, trusting the simulator's root), ``cryptsetup`` and
``tdx-boot-agent``. The image is approved before any VM boots, from the measurement
manifest ``image measure`` computes from the kernel, initrd and command line the VM
boots: no golden quote. Device-mapper may be absent, so the unlock is proven with
``cryptsetup open --test-passphrase``. A second VM booted with another kernel is refused,
and its console line names the kernel. Everything lives in a temporary directory that is
removed on exit, or kept with its logs with ``--keep``. Each command is printed with the
environment and the agent.conf it needs, so the story can be replayed by hand.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

BIN = Path(sys.executable).parent
TDXSIM = str(BIN / "tdxsim")
SERVER = str(BIN / "tdx-attest-server")
AGENT = str(BIN / "tdx-boot-agent")


def step(text: str) -> None:
    """Announce a step of the story."""
    print(f"\n==> {text}", flush=True)


def show(argv: Sequence[str]) -> None:
    print("    $ " + " ".join(shlex.quote(str(a)) for a in argv), flush=True)


def show_environment(env: dict[str, str]) -> None:
    """Print the verifier's variables as shell exports, for replaying the commands."""
    print("      the verifier's commands below run with:")
    for name in sorted(env):
        if name.startswith("TDX_ATTEST_") and os.environ.get(name) != env[name]:
            print(f"    $ export {name}={shlex.quote(env[name])}")


def show_file(path: Path) -> None:
    """Print a configuration file the next commands read."""
    print(f"      {path}:")
    for line in path.read_text(encoding="utf-8").splitlines():
        print(f"        {line}")


READ_NEXT = """
Read next:
  README.md                 the parts and a boot attestation by hand
  docs/server.md            running the verifier: settings, images, collateral, errors
  docs/image-building.md    putting the agent into an initramfs and registering images
  docs/agent.md             the agent's configuration, console lines and exit codes
  docs/protocol.md          the boot protocol byte by byte"""


def run(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    check: bool = True,
    quiet: bool = False,
    stdin: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command, print it and (indented) what it printed; raise on failure if asked."""
    show(argv)
    result = subprocess.run(
        list(argv), env=env, capture_output=True, text=True, stdin=stdin, check=False
    )
    if not quiet:
        # The agent's console lines (stderr) come before what its failure action prints.
        for line in (result.stderr + result.stdout).splitlines():
            print(f"      {line}")
    if check and result.returncode != 0:
        raise SystemExit(f"demo: {argv[0]} failed with exit status {result.returncode}")
    return result


class Background:
    """Long-running processes of the demo (FUSE mounts, the server), stopped on exit."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> None:
        show(argv)
        with log.open("wb") as handle:
            self.processes.append(
                subprocess.Popen(list(argv), stdout=handle, stderr=subprocess.STDOUT, env=env)
            )

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: {what} did not come up within {timeout:g} s")
        time.sleep(0.05)


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1) as answer:  # noqa: S310
            return bool(answer.status == 200)
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def agent_config(
    path: Path, url: str, device: Path, disk: Path, on_failure: str, *, run_dir: Path
) -> Path:
    path.write_text(
        "[server]\n"
        f"url = {url}\n"
        "allow_http = true                 ; loopback demo only: production uses https\n"
        "[tsm]\n"
        f"root = {device / 'report'}\n"
        "[eventlog]\n"
        "; the simulated device's stand-in for /sys/firmware/acpi/tables/data/CCEL\n"
        f"path = {device / '.tdxsim-ccel'}\n"
        "; the VM's /run (a tmpfs): its per-boot identity key never reaches a disk\n"
        "[identity]\n"
        f"path = {run_dir / 'identity.key'}\n"
        "[boot]\n"
        "deadline = 60\n"
        f"on_failure = {on_failure}\n"
        "; no device-mapper here: prove the key instead of mapping the volume\n"
        "cryptsetup = cryptsetup open --test-passphrase\n"
        "check_mapper = false\n"
        "poweroff_command = /bin/echo '(demo) the VM would power off now'\n"
        "[volume root]\n"
        f"device = {disk}\n"
    )
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Tell the story; returns 0 when the approved VM unlocked and the other was refused."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--keep", action="store_true", help="keep the working directory and its logs"
    )
    args = parser.parse_args(argv)
    background = Background()
    workdir = Path(tempfile.mkdtemp(prefix="tdx-boot-attest-demo-"))
    # Each simulated VM's /run: memory only, as the agent insists for its identity key.
    memory = Path(tempfile.mkdtemp(prefix="tdx-boot-attest-demo-", dir="/dev/shm"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return story(workdir, background, memory)
    finally:
        background.stop_all()
        shutil.rmtree(memory, ignore_errors=True)
        for mount in workdir.glob("tsm-*"):
            if os.path.ismount(mount):
                subprocess.run(["fusermount3", "-u", "-z", str(mount)], check=False)
        if args.keep:
            print(f"\n(kept {workdir}: server.log, m1.log, m2.log, verifier.db, *.conf)")
        else:
            subprocess.run(["rm", "-rf", "--one-file-system", str(workdir)], check=False)
            print(f"\n(cleaned up {workdir}; run with --keep to keep it and its logs)")
        print(READ_NEXT)


def story(work: Path, background: Background, memory: Path) -> int:
    state = work / "sim"
    step("A simulated TDX platform: Intel-style PKI, collateral and quoting")
    run([TDXSIM, "init", str(state)])

    step("The verifier: SQLite, a master key, the simulator's trust root and collateral")
    env = {
        **os.environ,
        "TDX_ATTEST_DATABASE_URL": f"sqlite:///{work / 'verifier.db'}",
        "TDX_ATTEST_MASTER_KEY_FILE": str(work / "master.key"),
        "TDX_ATTEST_TRUST_ROOT": str(state / "root_ca.der"),
        # Collateral is imported below; no PCCS is reachable in the demo.
        "TDX_ATTEST_PCCS_URL": f"http://127.0.0.1:{free_port()}",
    }
    show_environment(env)
    run([SERVER, "master-key", "generate", str(work / "master.key")], env=env)
    run([SERVER, "migrate"], env=env)
    run([SERVER, "collateral", "import", str(state / "collateral.json")], env=env)

    step("The image build: a kernel, an initrd and a command line (the golden VM's)")
    image = work / "image"
    run([TDXSIM, "profile", "inputs", "default", "--out-dir", str(image)])
    kernel = image / "vmlinuz-6.1.0-18-amd64"
    initrd = image / "initrd.img-6.1.0-18-amd64"
    platform_file = image / "platform-qemu-tdvf.json"

    step("The host type's platform profile (firmware, QEMU, VM shape), stored once")
    run([SERVER, "platform", "add", "qemu-tdvf", "--from-file", str(platform_file)], env=env)

    step("The image builder measures the image and registers it: no golden VM, no quote")
    manifest = work / "manifest.json"
    run([SERVER, "image", "measure", "--kernel", str(kernel), "--initrd", str(initrd),
         "--cmdline-file", str(image / "cmdline"), "--memory", "2G", "--platform", "qemu-tdvf",
         "--out", str(manifest)], env=env)  # fmt: skip
    passphrase = work / "passphrase"
    passphrase.write_bytes(secrets.token_urlsafe(32).encode())
    passphrase.chmod(0o600)
    disk = work / "root.img"
    with disk.open("wb") as handle:
        handle.truncate(32 * 1024 * 1024)
    run(["cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode", "--pbkdf", "pbkdf2",
         "--pbkdf-force-iterations", "1000", "--key-file", str(passphrase), str(disk)])  # fmt: skip
    run([SERVER, "image", "add", "golden", "--from-measurements", str(manifest),
         "--passphrase-file", str(passphrase)], env=env, quiet=True)  # fmt: skip
    print("      image 'golden' registered from the manifest: MRTD, RTMR0-3, reference events")
    passphrase.unlink()
    print("      the passphrase file is deleted: the key now exists only sealed in the verifier")

    step("The verifier serves the API")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    background.start(
        [SERVER, "serve", "--host", "127.0.0.1", "--port", str(port)], work / "server.log", env
    )
    wait_for(lambda: healthy(url), "the verifier")
    print(f"      listening on {url}")

    step("The golden VM boots that image: its configfs-tsm and firmware event log (FUSE)")
    golden_tsm = work / "tsm-golden"
    golden_tsm.mkdir()
    background.start(
        [TDXSIM, "mount", "--state", str(state), "--profile", "default", str(golden_tsm)],
        work / "m1.log",
    )
    wait_for((golden_tsm / "report").is_dir, "the FUSE mount")

    step("Inside the golden VM, the agent shows what the firmware measured")
    run([AGENT, "eventlog", "--event-log", str(golden_tsm / ".tdxsim-ccel"), "--tsm-root",
         str(golden_tsm / "report"), "--kmsg", "/nonexistent"])  # fmt: skip

    cmdline = work / "cmdline"
    cmdline.write_text("BOOT_IMAGE=/vmlinuz root=/dev/mapper/root quiet\n")
    kmsg = work / "kmsg"
    kmsg.touch()

    step("Boot of the golden VM: the agent attests (quote and event log) and unlocks the disk")
    conf = agent_config(
        work / "agent.conf", url, golden_tsm, disk, "prompt", run_dir=memory / "golden"
    )
    show_file(conf)
    boot = run([AGENT, "boot", "--config", str(conf), "--cmdline", str(cmdline),
                "--kmsg", str(kmsg)], check=False)  # fmt: skip
    unlocked = boot.returncode == 0

    step("The same, as a crypttab keyscript= piped into the system's cryptsetup")
    show([AGENT, "keyscript", "...", "|", "cryptsetup", "open", "--test-passphrase",
          "--key-file=-", str(disk)])  # fmt: skip
    keyscript = subprocess.Popen(
        [AGENT, "keyscript", "--config", str(conf), "--cmdline", str(cmdline), "--kmsg",
         str(kmsg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "CRYPTTAB_NAME": "root"},
    )  # fmt: skip
    if keyscript.stdout is None:  # pragma: no cover - stdout=PIPE always sets it
        raise SystemExit("demo: no pipe from the agent")
    opened = subprocess.run(
        ["cryptsetup", "open", "--test-passphrase", "--key-file=-", str(disk)],
        stdin=keyscript.stdout,
        capture_output=True,
        check=False,
    )
    keyscript.stdout.close()
    _, err = keyscript.communicate()
    for line in err.decode().splitlines():
        print(f"      {line}")
    piped = keyscript.returncode == 0 and opened.returncode == 0
    print(f"      cryptsetup: {'the key opens a key slot' if piped else 'FAILED'}")

    step("Another VM boots another kernel (built-in profile 'other')")
    other_tsm = work / "tsm-other"
    other_tsm.mkdir()
    background.start(
        [TDXSIM, "mount", "--state", str(state), "--profile", "other", str(other_tsm)],
        work / "m2.log",
    )
    wait_for((other_tsm / "report").is_dir, "the second FUSE mount")
    other_conf = agent_config(
        work / "other.conf", url, other_tsm, disk, "poweroff", run_dir=memory / "other"
    )
    print(f"      {other_conf}: as agent.conf, with tsm-other's paths and on_failure = poweroff")
    refused = run([AGENT, "boot", "--config", str(other_conf), "--cmdline", str(cmdline),
                   "--kmsg", str(kmsg)], check=False)  # fmt: skip
    print(f"      exit status {refused.returncode} (5: the verifier refused)")

    step("Result")
    # The refusal names the event that differs: the kernel, as a boot application.
    named = refused.returncode == 5 and "boot application kernel (kernel)" in refused.stderr
    ok = unlocked and piped and named
    print(f"      golden VM unlocked its disk:      {'yes' if unlocked else 'NO'}")
    print(f"      keyscript key opened the disk:   {'yes' if piped else 'NO'}")
    print(f"      other kernel refused, and named:  {'yes' if named else 'NO'}")
    print("      kernel log lines (/dev/kmsg in a real VM):")
    for line in kmsg.read_text().splitlines():
        print(f"        {line}")
    print("\nDEMO " + ("PASSED" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
