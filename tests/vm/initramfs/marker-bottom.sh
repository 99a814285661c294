#!/bin/sh
# Test-only init-bottom script: the root volume is unlocked and mounted at $rootmnt;
# print the marker file's content, where the agent's identity key is (the file's mode
# and the file system of /run, which init carries over to the real root), and power
# the VM off.

PREREQ=""
prereqs() {
	echo "$PREREQ"
}
case "$1" in
prereqs)
	prereqs
	exit 0
	;;
esac

if [ -r "${rootmnt:?}/tdx-vm-test-marker" ]; then
	echo "tdx-vm-test: marker=$(cat "${rootmnt}/tdx-vm-test-marker")" >/dev/kmsg
else
	echo "tdx-vm-test: no marker under ${rootmnt}" >/dev/kmsg
fi
grep " ${rootmnt} " /proc/mounts >/dev/kmsg
key=/run/tdx-boot-attest/identity.key
if [ -f "$key" ]; then
	run_fs=none
	while read -r _ mount_point fs_type _; do
		[ "$mount_point" = /run ] && run_fs="$fs_type"
	done </proc/mounts
	echo "tdx-vm-test: identity=$(stat -c %a "$key") run=$run_fs" >/dev/kmsg
else
	echo "tdx-vm-test: no identity key at $key" >/dev/kmsg
fi
poweroff -f
