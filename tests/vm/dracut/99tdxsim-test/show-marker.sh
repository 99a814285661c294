#!/bin/sh
# The root is unlocked and mounted at /sysroot: show the marker and where the agent's
# identity key is (its mode, and the file system of /run, which switch_root carries
# over), then power off.
if [ -r /sysroot/tdx-vm-test-marker ]; then
	echo "tdx-vm-test: marker=$(cat /sysroot/tdx-vm-test-marker)" >/dev/kmsg
else
	echo "tdx-vm-test: no marker under /sysroot" >/dev/kmsg
fi
grep " /sysroot " /proc/mounts >/dev/kmsg
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
echo o >/proc/sysrq-trigger
