"""The configfs-tsm model and its configfs file layer, against the kernel's rules."""

from __future__ import annotations

import contextlib
import errno
import os
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tdx_boot_attest.tdxsim.tsm.configfs import ConfigfsView
from tdx_boot_attest.tdxsim.tsm.errors import TsmError
from tdx_boot_attest.tdxsim.tsm.faults import FaultPlan, FaultSpecError
from tdx_boot_attest.tdxsim.tsm.model import OUTBLOB_MAX, KernelAbi, TsmModel

REPORT_DATA = bytes(range(64))


class FakeQuoter:
    """Records report data and returns a quote that names it."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []

    def __call__(self, report_data: bytes) -> bytes:
        self.calls.append(report_data)
        return b"QUOTE:" + report_data


@pytest.fixture
def quoter() -> FakeQuoter:
    return FakeQuoter()


@pytest.fixture
def view(quoter: FakeQuoter) -> ConfigfsView:
    return ConfigfsView(TsmModel(quoter))


def read(view: ConfigfsView, path: str) -> bytes:
    handle = view.open(path.split("/"), os.O_RDONLY)
    try:
        chunks = []
        offset = 0
        while chunk := handle.read(4096, offset):
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)
    finally:
        handle.release()


def write(view: ConfigfsView, path: str, data: bytes) -> None:
    handle = view.open(path.split("/"), os.O_WRONLY)
    try:
        handle.write(data, 0)
    finally:
        handle.release()


def errno_of(call: object) -> int:
    assert callable(call)
    with pytest.raises(OSError) as info:
        call()
    assert isinstance(info.value, TsmError)
    assert info.value.errno is not None
    assert info.value.reason == "tsm_" + errno.errorcode[info.value.errno].lower()
    return info.value.errno


def test_mkdir_shows_the_tdx_guest_attributes(view: ConfigfsView) -> None:
    view.mkdir(["report", "a"])
    assert view.listdir([]) == ["report"]
    assert view.listdir(["report"]) == ["a"]
    assert view.listdir(["report", "a"]) == ["generation", "provider", "inblob", "outblob"]
    assert read(view, "report/a/provider") == b"tdx_guest\n"
    assert read(view, "report/a/generation") == b"0\n"
    modes = {
        name: view.lookup(["report", "a", name]).mode for name in view.listdir(["report", "a"])
    }
    assert modes == {"generation": 0o444, "provider": 0o444, "inblob": 0o200, "outblob": 0o444}


def test_v6_7_layout_has_privlevel_and_auxblob(quoter: FakeQuoter) -> None:
    view = ConfigfsView(TsmModel(quoter, abi=KernelAbi.V6_7))
    view.mkdir(["report", "a"])
    assert set(view.listdir(["report", "a"])) == {
        "generation",
        "provider",
        "privlevel",
        "privlevel_floor",
        "inblob",
        "outblob",
        "auxblob",
    }
    assert read(view, "report/a/privlevel_floor") == b"0\n"
    write(view, "report/a/privlevel", b"2\n")
    write(view, "report/a/privlevel", b"0x3")
    assert read(view, "report/a/generation") == b"2\n"
    handle = view.open(["report", "a", "privlevel"], os.O_WRONLY)
    for bad in (b"4", b"abc", b"", b"-1", b"09"):
        assert errno_of(lambda data=bad: handle.write(data, 0)) == errno.EINVAL
    assert read(view, "report/a/generation") == b"2\n"
    write(view, "report/a/inblob", REPORT_DATA)
    assert read(view, "report/a/auxblob") == b""  # tdx_guest has no auxblob, but it quotes
    assert quoter.calls == [REPORT_DATA]
    assert read(view, "report/a/outblob") == b"QUOTE:" + REPORT_DATA
    assert len(quoter.calls) == 1


def test_directory_rules(view: ConfigfsView) -> None:
    view.mkdir(["report", "a"])
    assert errno_of(lambda: view.mkdir(["report", "a"])) == errno.EEXIST
    assert errno_of(lambda: view.mkdir(["elsewhere"])) == errno.EPERM
    assert errno_of(lambda: view.mkdir(["report", "a", "sub"])) == errno.EPERM
    assert errno_of(lambda: view.mkdir(["report", "a", "inblob", "x"])) == errno.ENOTDIR
    assert errno_of(lambda: view.rmdir(["report"])) == errno.EPERM
    assert errno_of(lambda: view.rmdir(["report", "missing"])) == errno.ENOENT
    assert errno_of(lambda: view.rmdir(["report", "a", "inblob"])) == errno.ENOTDIR
    assert errno_of(lambda: view.unlink(["report", "a", "inblob"])) == errno.EPERM
    assert errno_of(lambda: view.create(["report", "a", "new"])) == errno.EACCES
    assert errno_of(lambda: view.lookup(["report", "a", "nothing"])) == errno.ENOENT
    view.rmdir(["report", "a"])
    assert view.listdir(["report"]) == []


def test_open_modes_follow_the_attribute_permissions(view: ConfigfsView) -> None:
    view.mkdir(["report", "a"])
    assert errno_of(lambda: view.open(["report", "a", "outblob"], os.O_WRONLY)) == errno.EACCES
    assert errno_of(lambda: view.open(["report", "a", "inblob"], os.O_RDONLY)) == errno.EACCES
    assert errno_of(lambda: view.open(["report", "a", "inblob"], os.O_RDWR)) == errno.EACCES
    assert errno_of(lambda: view.open(["report", "a", "provider"], os.O_WRONLY)) == errno.EACCES
    assert errno_of(lambda: view.open(["report", "a"], os.O_RDONLY)) == errno.EISDIR


def test_inblob_is_committed_at_close_and_counts_one_generation(
    view: ConfigfsView, quoter: FakeQuoter
) -> None:
    view.mkdir(["report", "a"])
    handle = view.open(["report", "a", "inblob"], os.O_WRONLY)
    assert handle.write(REPORT_DATA[:40], 0) == 40
    assert handle.write(REPORT_DATA[40:], 40) == 24
    assert read(view, "report/a/generation") == b"0\n"
    handle.release()
    assert read(view, "report/a/generation") == b"1\n"
    assert read(view, "report/a/outblob") == b"QUOTE:" + REPORT_DATA
    assert quoter.calls == [REPORT_DATA]


def test_inblob_over_64_bytes_is_efbig_and_commits_what_was_buffered(view: ConfigfsView) -> None:
    view.mkdir(["report", "a"])
    write(view, "report/a/inblob", REPORT_DATA)
    handle = view.open(["report", "a", "inblob"], os.O_WRONLY)
    assert errno_of(lambda: handle.write(REPORT_DATA + b"x", 0)) == errno.EFBIG
    handle.release()
    # configfs still calls the write at close with the (empty) buffer: inblob is now empty
    assert read(view, "report/a/generation") == b"2\n"
    assert errno_of(lambda: read(view, "report/a/outblob")) == errno.EINVAL


def test_outblob_needs_an_inblob_of_exactly_64_bytes(view: ConfigfsView) -> None:
    view.mkdir(["report", "a"])
    assert errno_of(lambda: read(view, "report/a/outblob")) == errno.EINVAL
    write(view, "report/a/inblob", REPORT_DATA[:32])
    assert errno_of(lambda: read(view, "report/a/outblob")) == errno.EINVAL
    write(view, "report/a/inblob", REPORT_DATA)
    assert read(view, "report/a/outblob") == b"QUOTE:" + REPORT_DATA


def test_outblob_is_cached_until_generation_moves(view: ConfigfsView, quoter: FakeQuoter) -> None:
    view.mkdir(["report", "a"])
    write(view, "report/a/inblob", REPORT_DATA)
    first = read(view, "report/a/outblob")
    assert read(view, "report/a/outblob") == first
    assert len(quoter.calls) == 1
    write(view, "report/a/inblob", REPORT_DATA)  # same bytes, new generation
    assert read(view, "report/a/outblob") == first
    assert len(quoter.calls) == 2
    other = bytes(reversed(REPORT_DATA))
    write(view, "report/a/inblob", other)
    assert read(view, "report/a/outblob") == b"QUOTE:" + other
    assert read(view, "report/a/generation") == b"3\n"


def test_one_open_outblob_keeps_the_report_it_first_read(view: ConfigfsView) -> None:
    view.mkdir(["report", "a"])
    write(view, "report/a/inblob", REPORT_DATA)
    handle = view.open(["report", "a", "outblob"], os.O_RDONLY)
    head = handle.read(10, 0)
    write(view, "report/a/inblob", bytes(64))
    assert head + handle.read(4096, 10) == b"QUOTE:" + REPORT_DATA
    handle.release()
    assert read(view, "report/a/outblob") == b"QUOTE:" + bytes(64)


def test_entries_are_independent(view: ConfigfsView, quoter: FakeQuoter) -> None:
    view.mkdir(["report", "a"])
    view.mkdir(["report", "b"])
    write(view, "report/a/inblob", REPORT_DATA)
    write(view, "report/b/inblob", bytes(64))
    assert read(view, "report/b/outblob") == b"QUOTE:" + bytes(64)
    assert read(view, "report/a/outblob") == b"QUOTE:" + REPORT_DATA
    assert read(view, "report/b/generation") == b"1\n"


def test_rmdir_while_open_makes_the_open_file_fail(view: ConfigfsView) -> None:
    view.mkdir(["report", "a"])
    write(view, "report/a/inblob", REPORT_DATA)
    outblob = view.open(["report", "a", "outblob"], os.O_RDONLY)
    inblob = view.open(["report", "a", "inblob"], os.O_WRONLY)
    inblob.write(REPORT_DATA, 0)
    view.rmdir(["report", "a"])
    assert errno_of(lambda: outblob.read(100, 0)) == errno.ENOENT
    inblob.release()  # the commit is dropped, as the kernel drops it
    view.mkdir(["report", "a"])
    assert read(view, "report/a/generation") == b"0\n"


@pytest.mark.parametrize("err", [errno.EBUSY, errno.EIO, errno.ETIMEDOUT, errno.EINTR])
def test_injected_quote_errors_surface_once_then_recover(
    view: ConfigfsView, quoter: FakeQuoter, err: int
) -> None:
    view.model.faults.fail_report(err, times=2)
    view.mkdir(["report", "a"])
    write(view, "report/a/inblob", REPORT_DATA)
    assert errno_of(lambda: read(view, "report/a/outblob")) == err
    assert errno_of(lambda: read(view, "report/a/outblob")) == err
    assert read(view, "report/a/outblob") == b"QUOTE:" + REPORT_DATA
    assert quoter.calls == [REPORT_DATA]


def test_racing_writer_moves_generation_between_write_and_read(
    view: ConfigfsView, quoter: FakeQuoter
) -> None:
    view.model.faults.race()
    view.mkdir(["report", "a"])
    before = int(read(view, "report/a/generation"))
    write(view, "report/a/inblob", REPORT_DATA)
    quote = read(view, "report/a/outblob")
    after = int(read(view, "report/a/generation"))
    assert after == before + 2  # a client checking "+1" sees the conflict
    assert quote != b"QUOTE:" + REPORT_DATA
    assert quoter.calls == [bytes(b ^ 0xFF for b in REPORT_DATA)]
    write(view, "report/a/inblob", REPORT_DATA)  # the race was armed once
    assert read(view, "report/a/outblob") == b"QUOTE:" + REPORT_DATA


def test_no_provider(view: ConfigfsView, quoter: FakeQuoter) -> None:
    view.mkdir(["report", "a"])
    write(view, "report/a/inblob", REPORT_DATA)
    cached = read(view, "report/a/outblob")
    view.model.faults.set_provider(None)
    assert errno_of(lambda: view.mkdir(["report", "b"])) == errno.ENXIO
    assert errno_of(lambda: read(view, "report/a/provider")) == errno.ENXIO
    assert read(view, "report/a/outblob") == cached  # a current report is still served
    write(view, "report/a/inblob", REPORT_DATA)
    assert errno_of(lambda: read(view, "report/a/outblob")) == errno.ENXIO
    assert read(view, "report/a/generation") == b"2\n"
    view.model.faults.set_provider("tdx_guest")
    assert read(view, "report/a/outblob") == cached
    assert len(quoter.calls) == 2


def test_wrong_provider_name_is_shown(view: ConfigfsView) -> None:
    view.model.faults.apply("provider=sev_guest")
    view.mkdir(["report", "a"])
    assert read(view, "report/a/provider") == b"sev_guest\n"


def test_delay_stalls_report_generation_through_the_injected_sleep(quoter: FakeQuoter) -> None:
    slept: list[float] = []
    view = ConfigfsView(TsmModel(quoter, sleep=slept.append))
    view.model.faults.set_delay(2.5)
    view.mkdir(["report", "a"])
    write(view, "report/a/inblob", REPORT_DATA)
    read(view, "report/a/outblob")
    read(view, "report/a/outblob")
    assert slept == [2.5]


def test_quote_function_failure_is_eio() -> None:
    def broken(report_data: bytes) -> bytes:
        raise RuntimeError("host quoting service crashed")

    view = ConfigfsView(TsmModel(broken))
    view.mkdir(["report", "a"])
    write(view, "report/a/inblob", REPORT_DATA)
    assert errno_of(lambda: read(view, "report/a/outblob")) == errno.EIO


def test_oversized_report_is_efbig() -> None:
    view = ConfigfsView(TsmModel(lambda rd: bytes(OUTBLOB_MAX + 1)))
    view.mkdir(["report", "a"])
    write(view, "report/a/inblob", REPORT_DATA)
    assert errno_of(lambda: read(view, "report/a/outblob")) == errno.EFBIG


def test_write_generation_refuses_to_lap_the_read_generation(view: ConfigfsView) -> None:
    entry = view.model.mkdir("a")
    entry.write_generation = (1 << 64) - 1
    entry.read_generation = 0
    assert errno_of(lambda: view.model.write_blob(entry, "inblob", REPORT_DATA)) == errno.EBUSY
    entry.read_generation = 5
    view.model.write_blob(entry, "inblob", REPORT_DATA)
    assert entry.write_generation == 0  # wrapped


def test_concurrent_writers_each_count_once(view: ConfigfsView) -> None:
    view.mkdir(["report", "a"])
    barrier = threading.Barrier(8)

    def writer() -> None:
        barrier.wait()
        for _ in range(25):
            write(view, "report/a/inblob", REPORT_DATA)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert read(view, "report/a/generation") == b"200\n"


def test_fault_specs_parse_and_describe() -> None:
    plan = FaultPlan()
    plan.apply_text("outblob=EIO*2\nrace*3, delay=0.5\n# comment\nprovider=none")
    snap = plan.snapshot()
    assert snap.report_errors == (errno.EIO, errno.EIO)
    assert (snap.races, snap.delay_seconds, snap.provider) == (3, 0.5, None)
    assert "outblob=EIO" in plan.describe()
    plan.apply("outblob=110")
    assert plan.take_report_error() == errno.EIO
    plan.apply("clear")
    assert plan.snapshot().report_errors == ()
    assert plan.provider == "tdx_guest"
    bad_specs = ("outblob=ENOTANERRNO", "outblob=EIO*0", "outblob=", "race*x", "race=3",
                 "delay=-1", "delay=soon", "bogus", "provider=", "clear=1")  # fmt: skip
    for bad in bad_specs:
        with pytest.raises(FaultSpecError):
            plan.apply(bad)


@given(st.text(max_size=40))
def test_any_fault_spec_either_applies_or_is_refused_cleanly(spec: str) -> None:
    plan = FaultPlan()
    with contextlib.suppress(FaultSpecError):
        plan.apply_text(spec)
    assert plan.describe().startswith("provider=")
