#!/bin/sh
# Test-only init-bottom script: the root volume is unlocked and mounted at $rootmnt;
# print the marker file's content on the console and power the VM off.

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
poweroff -f
