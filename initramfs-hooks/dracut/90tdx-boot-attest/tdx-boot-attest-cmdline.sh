#!/bin/sh
# dracut cmdline hook: the agent needs the network in the initrd, so ask for it
# (rd.neednet=1) unless the kernel command line already says either way.
# Sourced by dracut, which provides getarg.

if [ -f /etc/tdx-boot-attest/agent.conf ] && ! getarg rd.neednet >/dev/null; then
    mkdir -p /etc/cmdline.d
    echo "rd.neednet=1" >/etc/cmdline.d/90-tdx-boot-attest.conf
fi
