#!/bin/sh
# Test-only init-premount script: starts the simulated configfs-tsm at /run/tdxsim
# (report/ below it) before local-top runs the agent. The profile comes from the
# kernel command line: tdxsim.profile=NAME (a profile shipped with tdxsim).

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
mkdir -p /run/tdxsim
PYTHONPATH=/usr/lib/tdxsim-test /opt/tdx-boot-attest/bin/python -m tdxsim.cli mount \
	--state /etc/tdxsim-state \
	--profile "/usr/lib/tdxsim-test/tdxsim/profiles/$profile.json" \
	/run/tdxsim >/dev/kmsg 2>&1 &

pid=$!
i=0
# Stop waiting as soon as the simulator exits (its error is on the console).
while [ ! -d /run/tdxsim/report ] && kill -0 "$pid" 2>/dev/null && [ "$i" -lt 2400 ]; do
	sleep 0.1
	i=$((i + 1))
done
if [ -d /run/tdxsim/report ]; then
	echo "tdx-vm-test: simulated configfs-tsm ready (profile $profile)" >/dev/kmsg
else
	echo "tdx-vm-test: simulated configfs-tsm did not start" >/dev/kmsg
fi
