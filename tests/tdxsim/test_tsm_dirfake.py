"""The directory fake: kernel semantics through file operations, a mirror on disk, faults."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import dcap_qvl
import pytest

from tdx_boot_attest.tdxsim.profile import Profile
from tdx_boot_attest.tdxsim.state import SimState
from tdx_boot_attest.tdxsim.tsm.device import EVENT_LOG_FILE
from tdx_boot_attest.tdxsim.tsm.dirfake import DirFake
from tdx_boot_attest.tdxsim.tsm.model import TsmModel

REPORT_DATA = b"\x42" * 64


@pytest.fixture
def fake(tmp_path: Path, shared_state: SimState) -> DirFake:
    return DirFake(tmp_path / "tsm", TsmModel(shared_state.make_quote))


def quoted(quote: bytes) -> bytes:
    """The REPORTDATA a quote carries."""
    report_data: bytes = dcap_qvl.parse_quote(quote).report.report_data
    return report_data


def quote_like_a_client(fake: DirFake, name: str = "q") -> tuple[int, bytes, int]:
    entry = fake.root / "report" / name
    fake.mkdir(entry)
    try:
        assert fake.read_text(entry / "provider") == "tdx_guest\n"
        before = int(fake.read_text(entry / "generation"))
        fake.write_bytes(entry / "inblob", REPORT_DATA)
        quote = fake.read_bytes(entry / "outblob")
        after = int(fake.read_text(entry / "generation"))
        return before, quote, after
    finally:
        fake.rmdir(entry)


def test_a_client_sequence_gets_a_quote(fake: DirFake) -> None:
    before, quote, after = quote_like_a_client(fake)
    assert (before, quoted(quote), after) == (0, REPORT_DATA, 1)
    assert fake.listdir(fake.root / "report") == []


def test_relative_paths_resolve_below_the_root(fake: DirFake) -> None:
    fake.mkdir("report/x")
    assert fake.exists("report/x/outblob")
    assert not fake.exists("report/x/auxblob")
    assert fake.listdir("report/x") == ["generation", "provider", "inblob", "outblob"]
    with pytest.raises(OSError) as info:
        fake.mkdir("/somewhere/else")
    assert info.value.errno == errno.EXDEV


def test_mirror_on_disk_shows_what_the_kernel_would(fake: DirFake) -> None:
    entry = fake.root / "report" / "m"
    fake.mkdir(entry)
    assert sorted(os.listdir(entry)) == ["generation", "inblob", "outblob", "provider"]
    assert (entry / "provider").read_text() == "tdx_guest\n"
    assert (entry / "outblob").stat().st_mode & 0o777 == 0o444
    assert (entry / "inblob").stat().st_mode & 0o777 == 0o200
    fake.write_bytes(entry / "inblob", REPORT_DATA)
    assert (entry / "generation").read_text() == "1\n"
    assert (entry / "outblob").read_bytes() == b""  # not generated yet
    quote = fake.read_bytes(entry / "outblob")
    assert (entry / "outblob").read_bytes() == quote
    fake.rmdir(entry)
    assert not entry.exists()


def test_kernel_errors_surface_with_their_errno(fake: DirFake) -> None:
    entry = fake.root / "report" / "e"
    fake.mkdir(entry)
    with pytest.raises(OSError) as info:
        fake.read_bytes(entry / "outblob")
    assert info.value.errno == errno.EINVAL
    with pytest.raises(OSError) as info:
        fake.write_bytes(entry / "inblob", REPORT_DATA + b"!")
    assert info.value.errno == errno.EFBIG
    with pytest.raises(OSError) as info:
        fake.mkdir(entry)
    assert info.value.errno == errno.EEXIST
    with pytest.raises(OSError) as info:
        fake.open(entry / "outblob", "wb")
    assert info.value.errno == errno.EACCES
    with pytest.raises(OSError) as info:
        fake.read_bytes(entry / "inblob")
    assert info.value.errno == errno.EACCES


def test_chunked_writes_commit_at_close(fake: DirFake) -> None:
    entry = fake.root / "report" / "c"
    fake.mkdir(entry)
    with fake.open(entry / "inblob", "wb") as handle:
        handle.write(REPORT_DATA[:10])
        handle.write(REPORT_DATA[10:])
        assert fake.read_text(entry / "generation") == "0\n"
    assert fake.read_text(entry / "generation") == "1\n"
    with fake.open(entry / "outblob", "rb") as handle:
        head = handle.read(3)
        assert isinstance(head, bytes)
        assert len(head) == 3
        rest = handle.read()
        assert isinstance(rest, bytes)
        assert quoted(head + rest) == REPORT_DATA


@pytest.mark.parametrize(
    ("op", "path", "err"),
    [
        ("mkdir", "report/q", errno.ENOMEM),
        ("open", "report/*/inblob", errno.EACCES),
        ("write", "report/q/inblob", errno.EINTR),
        ("close", "report/q/inblob", errno.EIO),
        ("read", "report/q/outblob", errno.EAGAIN),
        ("read", "report/q/generation", errno.EIO),
        ("read", "report/q/provider", errno.ENODEV),
        ("rmdir", "report/q", errno.EBUSY),
    ],
)
def test_per_call_faults_fire_once(fake: DirFake, op: str, path: str, err: int) -> None:
    fake.fail(op, path, err)
    with pytest.raises(OSError) as info:
        quote_like_a_client(fake)
    assert info.value.errno == err
    if fake.exists("report/q"):
        fake.rmdir("report/q")
    before, quote, after = quote_like_a_client(fake)
    assert (before, quoted(quote), after) == (0, REPORT_DATA, 1)


def test_per_call_fault_n_times(fake: DirFake) -> None:
    fake.fail("read", "report/*/outblob", errno.EIO, times=3)
    for _ in range(3):
        with pytest.raises(OSError) as info:
            quote_like_a_client(fake)
        assert info.value.errno == errno.EIO
    assert quoted(quote_like_a_client(fake)[1]) == REPORT_DATA
    assert ("read", "report/q/outblob") in fake.calls


@pytest.mark.parametrize("err", [errno.EBUSY, errno.EIO, errno.ETIMEDOUT])
def test_provider_faults_through_the_fake(fake: DirFake, err: int) -> None:
    fake.faults.fail_report(err)
    with pytest.raises(OSError) as info:
        quote_like_a_client(fake)
    assert info.value.errno == err
    assert quoted(quote_like_a_client(fake)[1]) == REPORT_DATA


def test_race_through_the_fake(fake: DirFake) -> None:
    fake.faults.race()
    before, quote, after = quote_like_a_client(fake)
    assert after == before + 2
    assert quoted(quote) == bytes(b ^ 0xFF for b in REPORT_DATA)


def test_no_provider_and_wrong_provider(fake: DirFake) -> None:
    fake.faults.set_provider(None)
    with pytest.raises(OSError) as info:
        fake.mkdir("report/q")
    assert info.value.errno == errno.ENXIO
    fake.faults.set_provider("sev_guest")
    fake.mkdir("report/q")
    assert fake.read_text("report/q/provider") == "sev_guest\n"
    assert (fake.root / "report/q/provider").read_text() == "sev_guest\n"


def test_unknown_operation_is_refused(fake: DirFake) -> None:
    with pytest.raises(ValueError):
        fake.fail("chmod", "report", errno.EIO)
    with pytest.raises(ValueError):
        fake.fail("read", "report", errno.EIO, times=0)


def test_errors_are_the_exception_classes_os_raises(fake: DirFake) -> None:
    fake.mkdir("report/x")
    with pytest.raises(FileExistsError):
        fake.mkdir("report/x")
    with pytest.raises(FileNotFoundError):
        fake.rmdir("report/y")
    with pytest.raises(FileNotFoundError):
        fake.mkdir("nothing/here")
    with pytest.raises(PermissionError):
        fake.open("report/x/outblob", "wb")
    with pytest.raises(FileNotFoundError) as info:
        fake.read_bytes(fake.root / "report/y/outblob")
    assert info.value.filename == str(fake.root / "report/y/outblob")
    with pytest.raises(OSError) as failed:
        fake.read_bytes("report/x/outblob")
    assert type(failed.value) is OSError
    assert failed.value.errno == errno.EINVAL
    assert failed.value.strerror == os.strerror(errno.EINVAL)


def test_the_event_log_is_a_plain_file_beside_report(
    tmp_path: Path, shared_state: SimState
) -> None:
    log = Profile.default().event_log()
    fake = DirFake(tmp_path / "tsm", TsmModel(shared_state.make_quote), event_log=log)
    plain = DirFake(tmp_path / "plain", TsmModel(shared_state.make_quote))

    assert fake.event_log_path == tmp_path / "tsm" / EVENT_LOG_FILE
    assert fake.event_log_path.read_bytes() == log
    assert fake.event_log_path.stat().st_mode & 0o777 == 0o400
    assert fake.listdir(fake.root) == ["report"]  # the configfs side does not show it
    assert not plain.event_log_path.exists()
