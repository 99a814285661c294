#!/bin/sh
# The root is unlocked and mounted at /sysroot: show the marker, then power off.
if [ -r /sysroot/tdx-vm-test-marker ]; then
	echo "tdx-vm-test: marker=$(cat /sysroot/tdx-vm-test-marker)" >/dev/kmsg
else
	echo "tdx-vm-test: no marker under /sysroot" >/dev/kmsg
fi
grep " /sysroot " /proc/mounts >/dev/kmsg
echo o >/proc/sysrq-trigger
