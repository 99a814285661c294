#!/bin/sh
# Test-only initramfs-tools hook: the initramfs crypttab for keyscript mode. The build
# machine has no /etc/crypttab entry for the test disk, so this writes the entry that
# cryptroot's hook would generate from one (TDX_VM_TEST_CRYPTTAB_UUID: the LUKS UUID).

PREREQ="cryptroot"
prereqs() {
	echo "$PREREQ"
}
case "$1" in
prereqs)
	prereqs
	exit 0
	;;
esac

uuid="${TDX_VM_TEST_CRYPTTAB_UUID:?}"
mkdir -p "${DESTDIR:?}/cryptroot"
printf 'root UUID=%s none luks,keyscript=/opt/tdx-boot-attest/libexec/keyscript\n' "$uuid" \
	>"$DESTDIR/cryptroot/crypttab"
