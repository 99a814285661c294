#!/bin/sh
# Installs the Debian/Ubuntu packages a target needs, only those not installed yet.
# Usage: install-system-deps.sh GROUP...   (groups: base test vm)
set -eu

pkgs_for() {
    case "$1" in
        base) echo "python3 python3-venv python3-dev gcc fuse3 libfuse3-3 cryptsetup-bin curl" ;;
        test) echo "shellcheck fuse3 libfuse3-3 cryptsetup-bin curl time file systemd python3 python3-venv" ;;
        vm) echo "qemu-system-x86 qemu-utils ovmf swtpm swtpm-tools osslsigncode busybox initramfs-tools cryptsetup cryptsetup-initramfs dracut-core dracut-network systemd e2fsprogs cpio zstd kmod udev klibc-utils python3 python3-venv linux-image-cloud-amd64" ;;
        *) echo "unknown package group: $1" >&2; exit 2 ;;
    esac
}

missing=""
for group in "$@"; do
    for pkg in $(pkgs_for "$group"); do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing="$missing $pkg"
        fi
    done
done

[ -n "$missing" ] || exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing system packages:$missing" >&2
# Another apt run (a second checkout setting up, unattended upgrades) may hold apt's
# locks for minutes: wait for it rather than fail. apt-get waits for the dpkg lock when
# told to, but not for the package lists' lock, so that one is retried here.
apt_get() {
    errors=$(mktemp)
    tries=0
    until $SUDO env DEBIAN_FRONTEND=noninteractive \
        apt-get -o DPkg::Lock::Timeout=900 "$@" 2>"$errors"; do
        tries=$((tries + 1))
        if [ "$tries" -ge 180 ] || ! grep -q "Could not get lock" "$errors"; then
            cat "$errors" >&2
            rm -f "$errors"
            return 1
        fi
        sleep 5
    done
    cat "$errors" >&2
    rm -f "$errors"
}

apt_get update -qq
# shellcheck disable=SC2086 # word splitting of the package list is intended
apt_get install -y -qq --no-install-recommends $missing >&2
