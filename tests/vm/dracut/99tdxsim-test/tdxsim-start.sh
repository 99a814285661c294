#!/bin/sh
# Starts the simulated configfs-tsm at /run/tdxsim and returns once report/ exists; the
# FUSE server stays in the unit's cgroup. The measured boot comes from the host through
# fw_cfg (opt/tdxsim/manifest), else from tdxsim.profile=NAME (default: default).
profile=default
read -r cmdline </proc/cmdline
for arg in $cmdline; do
	case "$arg" in
	tdxsim.profile=*) profile="${arg#tdxsim.profile=}" ;;
	esac
done
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
[ -d /run/tdxsim/report ] || exit 1
echo "tdx-vm-test: simulated configfs-tsm ready ($what)" >/dev/kmsg
