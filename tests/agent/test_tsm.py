"""agent.tsm against tdxsim's configfs-tsm directory fake, with every fault."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from tdx_boot_attest.agent.errors import LocalReason, TsmError
from tdx_boot_attest.agent.quote import parse_quote
from tdx_boot_attest.agent.tsm import ENTRY_PREFIX, OsFileOps, TsmQuoteProvider
from tdx_boot_attest.tdxsim.tsm.dirfake import DirFake

REPORT_DATA = bytes(range(64))


def provider(fake: DirFake, sleeps: list[float] | None = None) -> TsmQuoteProvider:
    record = sleeps if sleeps is not None else []
    return TsmQuoteProvider(fake.root / "report", fake, sleep=record.append)


def entries(fake: DirFake) -> list[str]:
    return fake.model.names()


def test_quote_carries_the_report_data_and_the_entry_is_removed(tsm_fake: DirFake) -> None:
    quote = provider(tsm_fake).get_quote(REPORT_DATA)
    assert parse_quote(quote).report_data == REPORT_DATA
    assert entries(tsm_fake) == []
    made = [path for op, path in tsm_fake.calls if op == "mkdir"]
    assert len(made) == 1
    assert made[0].startswith(f"report/{ENTRY_PREFIX}")
    assert ("rmdir", made[0]) in tsm_fake.calls


def test_every_request_uses_a_new_entry(tsm_fake: DirFake) -> None:
    tsm = provider(tsm_fake)
    tsm.get_quote(REPORT_DATA)
    tsm.get_quote(REPORT_DATA)
    made = [path for op, path in tsm_fake.calls if op == "mkdir"]
    assert len(set(made)) == 2


def test_exactly_64_bytes_are_required(tsm_fake: DirFake) -> None:
    with pytest.raises(ValueError, match="64"):
        provider(tsm_fake).get_quote(b"\x01" * 63)
    assert tsm_fake.calls == []


def test_generation_race_is_retried(tsm_fake: DirFake) -> None:
    sleeps: list[float] = []
    tsm_fake.faults.race(times=2)
    quote = provider(tsm_fake, sleeps).get_quote(REPORT_DATA)
    assert parse_quote(quote).report_data == REPORT_DATA
    assert len(sleeps) == 2
    assert entries(tsm_fake) == []


def test_a_race_that_never_ends_is_reported(tsm_fake: DirFake) -> None:
    tsm_fake.faults.race(times=50)
    with pytest.raises(TsmError) as caught:
        provider(tsm_fake).get_quote(REPORT_DATA)
    assert caught.value.reason == LocalReason.TSM_GENERATION_RACE
    assert entries(tsm_fake) == []


def test_ebusy_from_get_quote_is_retried(tsm_fake: DirFake) -> None:
    sleeps: list[float] = []
    tsm_fake.faults.fail_report(errno.EBUSY, times=3)
    quote = provider(tsm_fake, sleeps).get_quote(REPORT_DATA)
    assert parse_quote(quote).report_data == REPORT_DATA
    assert sleeps == [0.05, 0.1, 0.2]


def test_ebusy_on_write_is_retried(tsm_fake: DirFake) -> None:
    tsm_fake.fail("write", "report/*/inblob", errno.EBUSY)
    quote = provider(tsm_fake).get_quote(REPORT_DATA)
    assert parse_quote(quote).report_data == REPORT_DATA


def test_ebusy_that_persists_is_reported(tsm_fake: DirFake) -> None:
    tsm_fake.faults.fail_report(errno.EBUSY, times=10)
    with pytest.raises(TsmError) as caught:
        provider(tsm_fake).get_quote(REPORT_DATA)
    assert caught.value.reason == LocalReason.TSM_BUSY
    assert "5 attempts" in caught.value.message


@pytest.mark.parametrize(
    ("err", "reason"),
    [
        (errno.EIO, LocalReason.TSM_IO_ERROR),
        (errno.ETIMEDOUT, LocalReason.TSM_TIMEOUT),
        (errno.EINVAL, LocalReason.TSM_INVALID),
        (errno.ENOMEM, LocalReason.TSM_ERROR),
    ],
)
def test_get_quote_errors_are_final_and_named(tsm_fake: DirFake, err: int, reason: str) -> None:
    sleeps: list[float] = []
    tsm_fake.faults.fail_report(err)
    with pytest.raises(TsmError) as caught:
        provider(tsm_fake, sleeps).get_quote(REPORT_DATA)
    assert caught.value.reason == reason
    assert "reading outblob" in caught.value.message
    assert sleeps == []
    assert entries(tsm_fake) == []


def test_no_provider_is_enxio(tsm_fake: DirFake) -> None:
    tsm_fake.faults.set_provider(None)
    with pytest.raises(TsmError) as caught:
        provider(tsm_fake).get_quote(REPORT_DATA)
    assert caught.value.reason == LocalReason.TSM_UNAVAILABLE
    assert "not a TD" in caught.value.message


def test_enxio_on_provider_read(tsm_fake: DirFake) -> None:
    tsm_fake.fail("open", "report/*/provider", errno.ENXIO)
    with pytest.raises(TsmError) as caught:
        provider(tsm_fake).get_quote(REPORT_DATA)
    assert caught.value.reason == LocalReason.TSM_UNAVAILABLE
    assert entries(tsm_fake) == []


def test_wrong_provider_is_refused_before_writing(tsm_fake: DirFake) -> None:
    tsm_fake.faults.set_provider("sev_guest")
    with pytest.raises(TsmError) as caught:
        provider(tsm_fake).get_quote(REPORT_DATA)
    assert caught.value.reason == LocalReason.TSM_PROVIDER_UNSUPPORTED
    assert "sev_guest" in caught.value.message
    assert not any(path.endswith("inblob") for _, path in tsm_fake.calls)
    assert entries(tsm_fake) == []


def test_missing_report_directory(tmp_path: Path) -> None:
    tsm = TsmQuoteProvider(tmp_path / "nothing" / "report", OsFileOps())
    with pytest.raises(TsmError) as caught:
        tsm.get_quote(REPORT_DATA)
    assert caught.value.reason == LocalReason.TSM_UNAVAILABLE


def test_failing_rmdir_does_not_hide_the_quote(
    tsm_fake: DirFake, capsys: pytest.CaptureFixture[str]
) -> None:
    tsm_fake.fail("rmdir", "report/*", errno.EIO)
    quote = provider(tsm_fake).get_quote(REPORT_DATA)
    assert parse_quote(quote).report_data == REPORT_DATA
    assert "could not remove" in capsys.readouterr().err


def test_check_provider(tsm_fake: DirFake) -> None:
    assert provider(tsm_fake).check_provider() == "tdx_guest"
    assert entries(tsm_fake) == []
    tsm_fake.faults.set_provider("sev_guest")
    with pytest.raises(TsmError) as caught:
        provider(tsm_fake).check_provider()
    assert caught.value.reason == LocalReason.TSM_PROVIDER_UNSUPPORTED


def test_os_file_ops_write_and_read(tmp_path: Path) -> None:
    ops = OsFileOps()
    ops.mkdir(str(tmp_path / "d"))
    target = tmp_path / "d" / "f"
    target.touch()
    assert ops.write_bytes(str(target), b"x" * 10) == 10
    assert ops.read_bytes(str(target)) == b"x" * 10
    target.unlink()
    ops.rmdir(str(tmp_path / "d"))
    assert not (tmp_path / "d").exists()
