#!/bin/sh
# Test-only initramfs-tools hook (never part of a product image): carries the TDX
# simulator, which stands in for the TDX module and configfs-tsm inside the QEMU guest.
# Inputs: TDX_BOOT_ATTEST_PREFIX (the staged agent venv, whose Python runs the
# simulator), TDXSIM_TEST_LIB (a directory holding tdx_boot_attest/tdxsim/ and mfusepy.py) and
# TDXSIM_TEST_STATE (the simulator state directory: its PKI signs the quotes).
# TDX_VM_TEST_BUILD (optional) is written to /etc/tdx-vm-test-build: a rebuilt image
# whose content differs from the first build.

PREREQ="tdx-boot-attest"
prereqs() {
	echo "$PREREQ"
}
case "$1" in
prereqs)
	prereqs
	exit 0
	;;
esac

# shellcheck source=/dev/null
. /usr/share/initramfs-tools/hook-functions

die() {
	echo "E: tdxsim-test: $*" >&2
	exit 1
}

prefix="${TDX_BOOT_ATTEST_PREFIX:?}"
lib="${TDXSIM_TEST_LIB:?}"
state="${TDXSIM_TEST_STATE:?}"

list="$(mktemp)" || die "cannot create a temporary file"
trap 'rm -f "$list"' EXIT
"$prefix/bin/python" "$prefix/libexec/tdx_runtime_files.py" \
	--venv "$prefix" --target /opt/tdx-boot-attest \
	--entry tdx_boot_attest.tdxsim.cli --entry tdx_boot_attest.tdxsim.tsm.fuse --entry mfusepy \
	--extra-path "$lib/tdx_boot_attest" --extra-path "$lib/mfusepy.py" \
	--extra-target /usr/lib/tdxsim-test --ctypes-lib libfuse3.so.3 \
	--copy-into "$DESTDIR" >"$list" ||
	die "cannot list the simulator's runtime files"

tab="$(printf '\t')"
while IFS="$tab" read -r kind src dst; do
	case "$kind" in
	exec) copy_exec "$src" "$dst" || die "cannot copy $src" ;;
	file)
		copy_file file "$src" "$dst"
		[ $? -le 1 ] || die "cannot copy $src"
		;;
	*) die "unexpected line: $kind" ;;
	esac
done <"$list"

(cd "$state" && find . -type f) >"$list" || die "cannot list $state"
while read -r file; do
	copy_file state "$state/${file#./}" "/etc/tdxsim-state/${file#./}"
	[ $? -le 1 ] || die "cannot copy $state/$file"
done <"$list"
if [ -n "${TDX_VM_TEST_BUILD:-}" ]; then
	printf '%s\n' "$TDX_VM_TEST_BUILD" >"$DESTDIR/etc/tdx-vm-test-build" ||
		die "cannot write the build stamp"
fi
# qemu_fw_cfg: the host hands the simulator the measured boot through QEMU's fw_cfg.
manual_add_modules fuse qemu_fw_cfg
