"""The boot flows: fetch the key and unlock every volume, or hand it to cryptroot.

Both run under the configured overall deadline (device waits and every retry
included) and keep the key only in a bytearray that is wiped before returning.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tdx_boot_attest.agent.ccel import event_log_to_send
from tdx_boot_attest.agent.config import Config, Volume
from tdx_boot_attest.agent.console import Console
from tdx_boot_attest.agent.disk import Cryptsetup, DeviceWaiter, write_all
from tdx_boot_attest.agent.errors import ConfigError, DeadlineExceeded, LocalReason, TransientError
from tdx_boot_attest.agent.http_client import (
    BootClient,
    ReleasedKey,
    make_session,
    new_key_pair,
    released,
)
from tdx_boot_attest.agent.identity import DEFAULT_MOUNTINFO, Identity, load_or_create_identity
from tdx_boot_attest.agent.protocol import Kem
from tdx_boot_attest.agent.tsm import FileOps, OsFileOps, TsmQuoteProvider


def file_ops() -> FileOps:
    """The file operations used on the configfs-tsm tree (the real file system)."""
    return OsFileOps()


class BootContext:
    """What the flows need, injectable for tests: configuration, console, clock, and the
    mount table that shows where the identity key lives."""

    def __init__(
        self,
        config: Config,
        console: Console,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        waiter: DeviceWaiter | None = None,
        mountinfo: Path = DEFAULT_MOUNTINFO,
    ) -> None:
        self.config = config
        self.console = console
        self.clock = clock
        self.sleep = sleep
        self.waiter = waiter if waiter is not None else DeviceWaiter(clock=clock, sleep=sleep)
        self.mountinfo = mountinfo

    def identity(self) -> Identity:
        """This boot's identity key, made on first use (agent.identity).

        Raises IdentityUnavailable when it cannot be kept in memory or read back.
        """
        return load_or_create_identity(self.config.identity_path, self.mountinfo)

    def quote_provider(self) -> TsmQuoteProvider:
        """The configfs-tsm quote provider at the configured root. Raises nothing."""
        return TsmQuoteProvider(self.config.tsm_root, file_ops(), sleep=self.sleep)

    def client(self, identity: Identity | None = None) -> BootClient:
        """An HTTP client of the configured server; with ``identity`` its boot
        attestations bind that key (protocol v2).

        Reads the firmware's event log once, to send with every attempt. Raises
        ConfigError(kem_unsupported) when the configured KEM is not available here, so
        that shows before any network traffic, and EventLogUnavailable when the
        configuration requires the event log and none can be read.
        """
        config = self.config
        new_key_pair(Kem(config.kem))
        ca = str(config.ca_bundle) if config.ca_bundle else None
        event_log = event_log_to_send(config.event_log_path, required=config.event_log_required)
        if event_log.problem is not None:
            self.console.info(f"{event_log.problem}; attesting without it")
        return BootClient(
            config.server_url,
            make_session(ca),
            self.quote_provider(),
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            clock=self.clock,
            sleep=self.sleep,
            on_retry=self._report_retry,
            kem=Kem(config.kem),
            event_log=event_log.data,
            identity=identity,
        )

    def _report_retry(self, error: TransientError, delay: float) -> None:
        self.console.info(f"retrying in {delay:.1f} s: {error.reason}: {error.message}")


def fetch_key(context: BootContext, seconds: float) -> ReleasedKey:
    """Attest (binding this boot's identity key) and return the released key.

    Raises IdentityUnavailable before any request when the identity key cannot be had,
    and the AgentError subclasses of BootClient.fetch_key.
    """
    identity = context.identity()
    key = context.client(identity).fetch_key(seconds)
    context.console.success("key released", image=key.image, attestation_id=key.attestation_id)
    return key


def unlock_volumes(context: BootContext, volumes: tuple[Volume, ...]) -> None:
    """Wait for every device, fetch the key once, and open every volume with it.

    Raises ConfigError (no volumes), DiskError, DeadlineExceeded, ServerRefused,
    TransportError or TsmError.
    """
    config = context.config
    if not volumes:
        raise ConfigError("no [volume NAME] section configured: nothing to unlock")
    started = context.clock()

    def remaining() -> float:
        return config.deadline - (context.clock() - started)

    devices: list[tuple[Volume, Path]] = []
    for volume in volumes:
        budget = min(config.device_timeout, remaining())
        if budget <= 0:
            raise DeadlineExceeded(f"deadline reached while waiting for {volume.device}")
        devices.append((volume, context.waiter.wait(volume.device, budget)))
    cryptsetup = Cryptsetup(
        command=config.cryptsetup,
        check_mapper=config.check_mapper,
        mapper_dir=config.mapper_dir,
        clock=context.clock,
        sleep=context.sleep,
    )
    budget = remaining()
    if budget <= 0:
        raise DeadlineExceeded("deadline reached before the key could be requested")
    with released(fetch_key(context, budget)) as key:
        for volume, device in devices:
            cryptsetup.open(device, volume.name, key.key, volume.options)
            context.console.success("unlocked", volume=volume.name, device=str(device))


def keyscript(context: BootContext, volume_name: str | None, out_fd: int) -> None:
    """Fetch the key and write only it to ``out_fd`` (crypttab ``keyscript=`` contract).

    ``volume_name`` (CRYPTTAB_NAME) must be a configured volume when volumes are
    configured. Raises ConfigError(volume_unknown) or what fetch_key raises.
    """
    config = context.config
    if volume_name and config.volumes and config.volume(volume_name) is None:
        names = ", ".join(v.name for v in config.volumes)
        raise ConfigError(
            f"CRYPTTAB_NAME={volume_name!r} is not a configured volume (configured: {names})",
            LocalReason.VOLUME_UNKNOWN,
        )
    with released(fetch_key(context, config.deadline)) as key:
        write_all(out_fd, key.key)
