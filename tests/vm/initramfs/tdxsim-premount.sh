#!/bin/sh
# Test-only init-premount script: starts the simulated configfs-tsm at /run/tdxsim
# (report/ below it, the firmware event log as /run/tdxsim/.tdxsim-ccel) before
# local-top runs the agent. The host computes the measurements of what QEMU really
# loaded (kernel, initrd, command line) and hands them over through fw_cfg as the
# file opt/tdxsim/manifest, the way firmware learns what QEMU loaded; without it the
# simulator boots tdxsim.profile=NAME from the command line (default: default).

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

profile=default
read -r cmdline </proc/cmdline
for arg in $cmdline; do
	case "$arg" in
	tdxsim.profile=*) profile="${arg#tdxsim.profile=}" ;;
	esac
done

modprobe fuse
modprobe qemu_fw_cfg
manifest=/sys/firmware/qemu_fw_cfg/by_name/opt/tdxsim/manifest/raw
if [ -r "$manifest" ]; then
	set -- --manifest "$manifest"
	what="the host's measured boot from fw_cfg"
else
	set --
	what="profile $profile"
fi
mkdir -p /run/tdxsim
PYTHONPATH=/usr/lib/tdxsim-test /opt/tdx-boot-attest/bin/python -m tdx_boot_attest.tdxsim.cli mount \
	--state /etc/tdxsim-state \
	--profile "/usr/lib/tdxsim-test/tdx_boot_attest/tdxsim/profiles/$profile.json" "$@" \
	/run/tdxsim >/dev/kmsg 2>&1 &

pid=$!
i=0
# Stop waiting as soon as the simulator exits (its error is on the console).
while [ ! -d /run/tdxsim/report ] && kill -0 "$pid" 2>/dev/null && [ "$i" -lt 2400 ]; do
	sleep 0.1
	i=$((i + 1))
done
if [ -d /run/tdxsim/report ]; then
	echo "tdx-vm-test: simulated configfs-tsm ready ($what)" >/dev/kmsg
else
	echo "tdx-vm-test: simulated configfs-tsm did not start" >/dev/kmsg
fi
