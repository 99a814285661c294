"""The FUSE mount through the real kernel VFS: shell tools, Python's open(), faults, signals."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import dcap_qvl
import pytest

from tdx_boot_attest.tdxsim.profile import Profile
from tdx_boot_attest.tdxsim.state import SimState
from tdx_boot_attest.tdxsim.tsm.device import EVENT_LOG_FILE
from tests.support.tsm_mount import CONTROL_FILE, arm_fault, is_mounted, mounted_tsm
from tests.tdxsim.conftest import FIXED_NOW_SECS

pytestmark = pytest.mark.slow

REPORT_DATA = bytes(range(64))


@pytest.fixture(scope="module")
def mnt(shared_state: SimState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    mountpoint = tmp_path_factory.mktemp("fuse") / "tsm"
    with mounted_tsm(shared_state.path, mountpoint):
        yield mountpoint


@pytest.fixture(autouse=True)
def clean_mount(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "mnt" in request.fixturenames:
        mountpoint: Path = request.getfixturevalue("mnt")
        arm_fault(mountpoint, "clear")
        for name in os.listdir(mountpoint / "report"):
            os.rmdir(mountpoint / "report" / name)


def sh(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
    )


def verify(state: SimState, quote: bytes) -> None:
    collateral = dcap_qvl.QuoteCollateralV3.from_json(state.collateral_json)
    report = dcap_qvl.verify_with_root_ca(quote, collateral, state.root_ca_der, FIXED_NOW_SECS)
    assert report.status == "UpToDate"


def read_errno(path: Path) -> int:
    with pytest.raises(OSError) as info, open(path, "rb") as handle:
        handle.read()
    assert info.value.errno is not None
    return info.value.errno


def write_inblob(entry: Path, data: bytes) -> None:
    fd = os.open(entry / "inblob", os.O_WRONLY)
    try:
        assert os.write(fd, data) == len(data)
    finally:
        os.close(fd)


def test_shell_tools_get_a_quote_that_verifies(mnt: Path, shared_state: SimState) -> None:
    (mnt.parent / "rd.bin").write_bytes(REPORT_DATA)
    result = sh(
        "mkdir report/q && cat report/q/provider report/q/generation"
        f" && dd if={mnt.parent}/rd.bin of=report/q/inblob bs=64 count=1 status=none"
        f" && cat report/q/outblob > {mnt.parent}/quote.bin && cat report/q/generation"
        f" && dd if=report/q/outblob bs=100 status=none | cmp - {mnt.parent}/quote.bin"
        " && rmdir report/q && ls report",
        mnt,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "tdx_guest\n0\n1\n"
    quote = (mnt.parent / "quote.bin").read_bytes()
    assert dcap_qvl.parse_quote(quote).report.report_data == REPORT_DATA
    verify(shared_state, quote)


def test_tree_looks_like_configfs(mnt: Path) -> None:
    assert sorted(os.listdir(mnt)) == ["report"]  # the control file and log are not listed
    assert (mnt / CONTROL_FILE).is_file()
    assert (mnt / EVENT_LOG_FILE).is_file()
    os.mkdir(mnt / "report" / "t")
    entry = mnt / "report" / "t"
    assert sorted(os.listdir(entry)) == ["generation", "inblob", "outblob", "provider"]
    modes = {name: stat.S_IMODE(os.stat(entry / name).st_mode) for name in os.listdir(entry)}
    assert modes == {"generation": 0o444, "provider": 0o444, "inblob": 0o200, "outblob": 0o444}
    sizes = {name: os.stat(entry / name).st_size for name in os.listdir(entry)}
    assert sizes == {"generation": 4096, "provider": 4096, "inblob": 0, "outblob": 0}
    assert stat.S_ISDIR(os.stat(entry).st_mode)


def test_the_event_log_is_the_ccel_of_the_profiles_boot(mnt: Path) -> None:
    log = mnt / EVENT_LOG_FILE
    expected = Profile.default().event_log()
    assert expected is not None
    (mnt.parent / "expected.ccel").write_bytes(expected)

    assert log.read_bytes() == expected
    assert log.stat().st_size == len(expected) == 64 * 1024
    assert stat.S_IMODE(log.stat().st_mode) == 0o400
    result = sh(f"dd if={EVENT_LOG_FILE} bs=1000 status=none | cmp - ../expected.ccel", mnt)
    assert result.returncode == 0, result.stderr
    with pytest.raises(PermissionError):
        open(log, "r+b")  # noqa: SIM115 - the open itself must fail
    assert sorted(os.listdir(mnt)) == ["report"]


def test_kernel_errors_reach_python_and_the_shell(mnt: Path) -> None:
    entry = mnt / "report" / "e"
    os.mkdir(entry)
    assert read_errno(entry / "outblob") == errno.EINVAL  # nothing written yet
    fd = os.open(entry / "inblob", os.O_WRONLY)
    with pytest.raises(OSError) as info:
        os.write(fd, REPORT_DATA + b"!")
    assert info.value.errno == errno.EFBIG
    os.close(fd)
    write_inblob(entry, REPORT_DATA[:32])
    assert read_errno(entry / "outblob") == errno.EINVAL  # tdx_guest wants 64 bytes
    with pytest.raises(OSError) as info:
        open(entry / "outblob", "wb")  # noqa: SIM115
    assert info.value.errno == errno.EACCES
    with pytest.raises(OSError) as info:
        os.mkdir(mnt / "elsewhere")
    assert info.value.errno == errno.EPERM
    with pytest.raises(OSError) as info:
        os.mkdir(entry)
    assert info.value.errno == errno.EEXIST
    result = sh("head -c 65 /dev/zero > report/e/inblob", mnt)
    assert result.returncode != 0
    assert os.strerror(errno.EFBIG) in result.stderr
    result = sh("cat report/e/outblob", mnt)
    assert result.returncode != 0
    assert f"report/e/outblob: {os.strerror(errno.EINVAL)}" in result.stderr


def test_outblob_is_cached_until_generation_moves(mnt: Path) -> None:
    entry = mnt / "report" / "c"
    os.mkdir(entry)
    write_inblob(entry, REPORT_DATA)
    first = (entry / "outblob").read_bytes()
    # An armed GetQuote failure is only consumed when a report is really generated.
    arm_fault(mnt, "outblob=EIO")
    assert (entry / "outblob").read_bytes() == first
    assert "outblob=EIO" in (mnt / CONTROL_FILE).read_text()
    write_inblob(entry, REPORT_DATA)
    assert read_errno(entry / "outblob") == errno.EIO
    assert (entry / "outblob").read_bytes() == first  # same data: same (deterministic) quote
    assert (entry / "generation").read_text() == "2\n"


@pytest.mark.parametrize("err", [errno.EBUSY, errno.EIO, errno.ETIMEDOUT])
def test_injected_outblob_errors(mnt: Path, err: int) -> None:
    entry = mnt / "report" / "f"
    os.mkdir(entry)
    write_inblob(entry, REPORT_DATA)
    arm_fault(mnt, f"outblob={errno.errorcode[err]}*2")
    result = sh("cat report/f/outblob > /dev/null", mnt)
    assert result.returncode != 0
    assert f"report/f/outblob: {os.strerror(err)}" in result.stderr
    assert read_errno(entry / "outblob") == err
    assert len((entry / "outblob").read_bytes()) > 1000  # armed twice, so now it works


def test_control_file_reads_back_and_refuses_nonsense(mnt: Path) -> None:
    arm_fault(mnt, "race*2")
    assert "race*2" in (mnt / CONTROL_FILE).read_text()
    with pytest.raises(OSError) as info:
        arm_fault(mnt, "outblob=ENOTHING")
    assert info.value.errno == errno.EINVAL


def test_concurrent_writer_moves_generation(mnt: Path) -> None:
    entry = mnt / "report" / "r"
    os.mkdir(entry)
    arm_fault(mnt, "race")
    before = int((entry / "generation").read_text())
    write_inblob(entry, REPORT_DATA)
    quote = (entry / "outblob").read_bytes()
    after = int((entry / "generation").read_text())
    assert after == before + 2
    assert dcap_qvl.parse_quote(quote).report.report_data != REPORT_DATA


def test_no_provider_and_wrong_provider(mnt: Path) -> None:
    entry = mnt / "report" / "p"
    os.mkdir(entry)
    write_inblob(entry, REPORT_DATA)
    arm_fault(mnt, "provider=none")
    assert read_errno(entry / "provider") == errno.ENXIO
    assert read_errno(entry / "outblob") == errno.ENXIO
    with pytest.raises(OSError) as info:
        os.mkdir(mnt / "report" / "other")
    assert info.value.errno == errno.ENXIO
    result = sh("cat report/p/provider", mnt)
    assert os.strerror(errno.ENXIO) in result.stderr
    arm_fault(mnt, "provider=sev_guest")
    assert (entry / "provider").read_text() == "sev_guest\n"


def test_two_concurrent_writers(mnt: Path, shared_state: SimState) -> None:
    shared = mnt / "report" / "shared"
    os.mkdir(shared)
    barrier = threading.Barrier(2)
    quotes: dict[int, bytes] = {}
    failures: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            barrier.wait()
            for _ in range(10):
                write_inblob(shared, bytes([index]) * 64)
            own = mnt / "report" / f"own{index}"
            os.mkdir(own)
            write_inblob(own, bytes([index]) * 64)
            quotes[index] = (own / "outblob").read_bytes()
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures
    assert (shared / "generation").read_text() == "20\n"
    for index, quote in quotes.items():
        assert dcap_qvl.parse_quote(quote).report.report_data == bytes([index]) * 64
        verify(shared_state, quote)


def test_cli_flags_arm_faults_and_sigterm_unmounts(shared_state: SimState, tmp_path: Path) -> None:
    mountpoint = tmp_path / "tsm"
    args = ("--fault", "outblob=ETIMEDOUT", "--abi", "6.7", "--profile", "other", "--debug-td")
    with mounted_tsm(shared_state.path, mountpoint, *args) as proc:
        entry = mountpoint / "report" / "a"
        os.mkdir(entry)
        assert "auxblob" in os.listdir(entry)
        write_inblob(entry, REPORT_DATA)
        assert read_errno(entry / "outblob") == errno.ETIMEDOUT
        report = dcap_qvl.parse_quote((entry / "outblob").read_bytes()).report
        assert report.report_data == REPORT_DATA
        assert report.rt_mr1.hex() == Profile.builtin("other").rtmr1
        assert report.rt_mr1.hex() != Profile.default().rtmr1
        assert report.td_attributes[0] & 0x01  # DEBUG
        assert (mountpoint / EVENT_LOG_FILE).read_bytes() == Profile.builtin("other").event_log()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not is_mounted(mountpoint)


def test_raw_registers_have_no_event_log_and_a_manifest_brings_one(
    shared_state: SimState, tmp_path: Path
) -> None:
    from tdx_boot_attest.agent.tsm import OsFileOps, TsmQuoteProvider

    other = Profile.builtin("other")
    raw = tmp_path / "raw.json"
    Profile.default().with_rtmr(1, "ab" * 48).save(raw)
    manifest = tmp_path / "manifest.json"
    assert other.boot is not None
    manifest.write_text(json.dumps(other.boot.manifest.to_json()))

    with mounted_tsm(shared_state.path, tmp_path / "raw", "--profile", str(raw)):
        assert not (tmp_path / "raw" / EVENT_LOG_FILE).exists()
        assert (tmp_path / "raw" / "report").is_dir()
    with mounted_tsm(shared_state.path, tmp_path / "m", "--manifest", str(manifest)):
        assert (tmp_path / "m" / EVENT_LOG_FILE).read_bytes() == other.event_log()
        client = TsmQuoteProvider(tmp_path / "m" / "report", OsFileOps())
        quote = dcap_qvl.parse_quote(client.get_quote(REPORT_DATA)).report
        assert quote.rt_mr1.hex() == other.rtmr1
        assert quote.mr_td.hex() == other.mrtd


def test_mount_refuses_a_missing_state(tmp_path: Path) -> None:
    mountpoint = tmp_path / "tsm"
    mountpoint.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tdxsim",
            "mount",
            "--state",
            str(tmp_path / "none"),
            str(mountpoint),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "tdxsim: error: state_invalid" in result.stderr
    assert not is_mounted(mountpoint)


def test_two_shell_writers_each_count(mnt: Path) -> None:
    os.mkdir(mnt / "report" / "s")
    (mnt.parent / "rd64").write_bytes(REPORT_DATA)
    write = f"dd if={mnt.parent}/rd64 of=report/s/inblob status=none || exit 1"
    loop = f"for i in 1 2 3 4 5 6 7 8 9 10; do {write}; done"
    result = sh(f"({loop}) & a=$!; ({loop}) & b=$!; wait $a && wait $b", mnt)
    assert result.returncode == 0, result.stderr
    assert (mnt / "report" / "s" / "generation").read_text() == "20\n"


def test_the_agent_client_works_over_the_mount(mnt: Path, shared_state: SimState) -> None:
    from tdx_boot_attest.agent.tsm import OsFileOps, TsmQuoteProvider

    arm_fault(mnt, "race")
    arm_fault(mnt, "outblob=EBUSY")
    client = TsmQuoteProvider(mnt / "report", OsFileOps(), sleep=lambda seconds: None)
    quote = client.get_quote(REPORT_DATA)
    assert dcap_qvl.parse_quote(quote).report.report_data == REPORT_DATA
    verify(shared_state, quote)
    assert os.listdir(mnt / "report") == []
