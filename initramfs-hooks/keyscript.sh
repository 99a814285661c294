#!/bin/sh
# crypttab keyscript: prints the volume's key on stdout after attestation.
#   root UUID=... none luks,initramfs,keyscript=/opt/tdx-boot-attest/libexec/keyscript
# cryptroot runs it with CRYPTTAB_NAME set; the agent names the volume from it.
exec /opt/tdx-boot-attest/bin/tdx-boot-agent keyscript
