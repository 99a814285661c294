"""agent.boot: the flows' ordering and their share of the overall deadline."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tdx_boot_attest.agent.boot import BootContext, keyscript, unlock_volumes
from tdx_boot_attest.agent.config import Config, Volume
from tdx_boot_attest.agent.console import Console
from tdx_boot_attest.agent.disk import DeviceWaiter
from tdx_boot_attest.agent.errors import ConfigError, DeadlineExceeded, DiskError, LocalReason
from tests.support.scripted_http import ScriptedServer


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def context(config: Config, clock: FakeClock) -> BootContext:
    waiter = DeviceWaiter(clock=clock, sleep=clock.sleep, use_udev=False)
    console = Console(kmsg=None, stream=io.StringIO())
    return BootContext(config, console, clock=clock, sleep=clock.sleep, waiter=waiter)


def test_no_volumes_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="nothing to unlock"):
        unlock_volumes(context(Config(server_url="https://a"), FakeClock()), ())


def test_devices_are_awaited_before_any_request(tmp_path: Path) -> None:
    server = ScriptedServer()
    with server.running():
        config = Config(server_url=server.url, allow_http=True, deadline=100, device_timeout=7)
        volumes = (Volume("root", str(tmp_path / "missing")),)
        clock = FakeClock()
        with pytest.raises(DiskError) as caught:
            unlock_volumes(context(config, clock), volumes)
    assert caught.value.reason == LocalReason.DEVICE_NOT_FOUND
    assert clock.now == pytest.approx(7)
    assert server.requests == []


def test_device_waits_share_the_overall_deadline(tmp_path: Path) -> None:
    config = Config(server_url="https://a", deadline=10, device_timeout=6)
    present = tmp_path / "present"
    present.touch()
    volumes = (Volume("a", str(tmp_path / "late")), Volume("b", str(present)))
    clock = FakeClock()
    with pytest.raises(DiskError, match="within 6 s"):
        unlock_volumes(context(config, clock), volumes)
    volumes = (Volume("a", str(present)), Volume("b", str(tmp_path / "late")))
    config = Config(server_url="https://a", deadline=4, device_timeout=6)
    clock = FakeClock()
    with pytest.raises(DiskError, match="within 4 s"):
        unlock_volumes(context(config, clock), volumes)


def test_deadline_spent_before_the_key_request(tmp_path: Path) -> None:
    present = tmp_path / "present"
    present.touch()
    config = Config(server_url="https://a", deadline=5)
    clock = FakeClock()
    ctx = context(config, clock)

    class SlowWaiter(DeviceWaiter):
        def wait(self, spec: str, timeout: float) -> Path:
            clock.now += 6
            return present

    ctx.waiter = SlowWaiter()
    with pytest.raises(DeadlineExceeded, match="before the key could be requested"):
        unlock_volumes(ctx, (Volume("root", str(present)),))


def test_keyscript_refuses_an_unknown_crypttab_name() -> None:
    config = Config(server_url="https://a", volumes=(Volume("root", "/dev/vda2"),))
    with pytest.raises(ConfigError) as caught:
        keyscript(context(config, FakeClock()), "swap", 1)
    assert caught.value.reason == LocalReason.VOLUME_UNKNOWN
