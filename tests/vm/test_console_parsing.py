"""The serial-console parse the VM tests time boots with, on interleavings seen in real boots."""

from __future__ import annotations

from tests.vm.qemu import BootResult


def result(console: str) -> BootResult:
    return BootResult(console, 0, False, 1.0, "tcg")


def test_the_kernel_record_is_found_after_an_unstamped_copy_on_the_same_line() -> None:
    # The agent's stderr copy was cut by the kernel's own record of the same line, whose
    # end then followed on the next line: the first occurrence on the line has no stamp.
    console = (
        "[   21.246614] tdx-boot-attest: agent starting\n"
        'tdx-boot-attest: OK unlocked volume="root" dev'
        '[   24.786886] tdx-boot-attest: OK unlocked volume="root" device="/dev/vda"\n'
        'ice="/dev/vda"\n'
    )
    assert result(console).kernel_time("tdx-boot-attest: OK unlocked") == 24.786886


def test_user_space_text_before_a_record_and_records_in_order() -> None:
    console = (
        "Begin: Running /scripts/init-bottom ... [   25.887990] tdx-vm-test: marker=ab\n"
        "[   26.000001] tdx-vm-test: marker=cd\n"
    )
    assert result(console).kernel_time("tdx-vm-test: marker=") == 25.887990


def test_a_needle_in_a_record_text_and_no_record_at_all() -> None:
    console = (
        "tdx-boot-attest: OK key released image=x\n"
        "[   10.615547] tdx-vm-test: simulated configfs-tsm ready (profile default)\n"
    )
    parsed = result(console)
    assert parsed.kernel_time("configfs-tsm ready") == 10.615547
    # Only user-space copies: no kernel time, rather than a wrong one.
    assert parsed.kernel_time("tdx-boot-attest: OK key released") is None


def test_the_whole_kernel_record_is_returned_without_its_stamp() -> None:
    console = (
        'tdx-boot-attest: FAILED reason=measurement_mismatch message="rtmr2 di'
        '[   30.100000] tdx-boot-attest: FAILED reason=measurement_mismatch message="rtmr2 '
        'differs from image x: \\"Linux initrd\\" (initrd) 1…≠2…; everything else equal"\n'
        "ffers\n"
    )
    record = result(console).kernel_record("FAILED reason=")
    assert record is not None
    assert record.startswith("tdx-boot-attest: FAILED reason=measurement_mismatch")
    assert record.endswith('everything else equal"')
    assert result(console).kernel_record("absent") is None
