#!/bin/bash
# dracut module: carries the tdx-boot-attest agent and its initrd unit into the image.
# Build-time overrides (staged installs): TDX_BOOT_ATTEST_PREFIX, TDX_BOOT_ATTEST_CONFIG.
# Sourced by dracut, which provides inst_*, instmods, dfatal, $initdir, $moddir.
# shellcheck disable=SC2154 # initdir, moddir and SYSTEMCTL are dracut's

tdx_prefix() {
    echo "${TDX_BOOT_ATTEST_PREFIX:-/opt/tdx-boot-attest}"
}

tdx_config() {
    echo "${TDX_BOOT_ATTEST_CONFIG:-/etc/tdx-boot-attest/agent.conf}"
}

# Included whenever the agent is installed and configured.
check() {
    [ -x "$(tdx_prefix)/bin/python" ] || return 1
    [ -f "$(tdx_config)" ] || return 1
    require_binaries cryptsetup || return 1
    return 0
}

depends() {
    echo systemd network crypt
    return 0
}

installkernel() {
    instmods dm_crypt xts
    # Present only on TDX-enabled kernels.
    hostonly='' instmods tdx_guest
}

install() {
    local prefix config list kind src dst failed=""
    prefix="$(tdx_prefix)"
    config="$(tdx_config)"
    list="$(mktemp)" || return 1
    if ! "$prefix/bin/python" "$prefix/libexec/tdx_runtime_files.py" \
        --venv "$prefix" --target /opt/tdx-boot-attest --config "$config" \
        --with-libraries --copy-into "$initdir" >"$list"; then
        rm -f "$list"
        dfatal "tdx-boot-attest: cannot list the agent's runtime files"
        return 1
    fi
    while IFS=$'\t' read -r kind src dst; do
        case "$kind" in
            # Python extension modules are not executable files, so dracut's lazy
            # dependency pass would miss their libraries (libffi, ...): resolve now.
            exec) DRACUT_RESOLVE_DEPS=1 inst_binary "$src" "$dst" ;;
            file) inst_simple "$src" "$dst" ;;
            *) false ;;
        esac || {
            failed="$src"
            break
        }
    done <"$list"
    rm -f "$list"
    if [ -n "$failed" ]; then
        dfatal "tdx-boot-attest: cannot install $failed"
        return 1
    fi

    inst_simple "$config" /etc/tdx-boot-attest/agent.conf || {
        dfatal "tdx-boot-attest: cannot install $config"
        return 1
    }
    inst_simple "$prefix/libexec/keyscript" /opt/tdx-boot-attest/libexec/keyscript
    inst_multiple cryptsetup modprobe poweroff reboot || {
        dfatal "tdx-boot-attest: cannot install cryptsetup"
        return 1
    }
    inst_simple "$moddir/tdx-boot-attest.service" \
        "${systemdsystemunitdir:-/usr/lib/systemd/system}/tdx-boot-attest.service" || {
        dfatal "tdx-boot-attest: cannot install tdx-boot-attest.service"
        return 1
    }
    $SYSTEMCTL -q --root "$initdir" add-wants initrd.target tdx-boot-attest.service
    inst_hook cmdline 10 "$moddir/tdx-boot-attest-cmdline.sh"
}
