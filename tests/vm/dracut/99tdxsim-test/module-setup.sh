#!/bin/bash
# Test-only dracut module (never part of a product image): the TDX simulator standing
# in for configfs-tsm in the QEMU guest, and a unit that shows the unlocked root's
# marker file and powers off. Inputs as for the initramfs-tools test hook:
# TDX_BOOT_ATTEST_PREFIX, TDXSIM_TEST_LIB, TDXSIM_TEST_STATE.
# shellcheck disable=SC2154 # initdir, moddir and systemdsystemunitdir are dracut's

check() {
    return 255
}

depends() {
    echo tdx-boot-attest
    return 0
}

installkernel() {
    # qemu_fw_cfg: the host hands the simulator the measured boot through QEMU's fw_cfg.
    instmods fuse qemu_fw_cfg
}

install() {
    local prefix="${TDX_BOOT_ATTEST_PREFIX:?}" lib="${TDXSIM_TEST_LIB:?}"
    local state="${TDXSIM_TEST_STATE:?}" list kind src dst file failed=""
    list="$(mktemp)" || return 1
    "$prefix/bin/python" "$prefix/libexec/tdx_runtime_files.py" \
        --venv "$prefix" --target /opt/tdx-boot-attest \
        --entry tdx_boot_attest.tdxsim.cli --entry tdx_boot_attest.tdxsim.tsm.fuse --entry mfusepy \
        --extra-path "$lib/tdx_boot_attest" --extra-path "$lib/mfusepy.py" \
        --extra-target /usr/lib/tdxsim-test --ctypes-lib libfuse3.so.3 \
        --with-libraries --copy-into "$initdir" >"$list" || failed="the simulator's file list"
    while [ -z "$failed" ] && IFS=$'\t' read -r kind src dst; do
        [ "$kind" = exec ] && DRACUT_RESOLVE_DEPS=1 inst_binary "$src" "$dst" || failed="$src"
    done <"$list"
    (cd "$state" && find . -type f) >"$list" || failed="$state"
    while [ -z "$failed" ] && read -r file; do
        inst_simple "$state/${file#./}" "/etc/tdxsim-state/${file#./}" || failed="$file"
    done <"$list"
    rm -f "$list"
    if [ -n "$failed" ]; then
        dfatal "tdxsim-test: cannot install $failed"
        return 1
    fi
    inst_multiple sleep cat grep stat
    inst_script "$moddir/tdxsim-start.sh" /usr/lib/tdxsim-test/tdxsim-start
    inst_script "$moddir/show-marker.sh" /usr/lib/tdxsim-test/show-marker
    inst_simple "$moddir/tdxsim-test.service" "$systemdsystemunitdir/tdxsim-test.service"
    inst_simple "$moddir/tdx-vm-test-marker.service" \
        "$systemdsystemunitdir/tdx-vm-test-marker.service"
    $SYSTEMCTL -q --root "$initdir" add-wants initrd.target tdxsim-test.service
    $SYSTEMCTL -q --root "$initdir" add-wants initrd.target tdx-vm-test-marker.service
}
