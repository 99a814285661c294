"""Expected TDX measurements of a QEMU direct boot, computed from the image's inputs.

Pure functions (no I/O, stdlib + agent.eventlog only); never imported by the agent's
boot path. One module per job:

* :mod:`.pe`: the Authenticode digest of a PE/COFF image (what the firmware measures);
* :mod:`.linux_boot`: the Linux setup header and QEMU's direct-boot patching of it;
* :mod:`.memory`: memory-size text and QEMU q35's RAM split;
* :mod:`.td_hob`: the TD HOB QEMU builds, and its digest;
* :mod:`.tdvf`: TDVF metadata and MRTD from a firmware file;
* :mod:`.efi`: the firmware's and the Linux EFI stub's events and digest rules;
* :mod:`.platform`: platform profiles (captured per host type);
* :mod:`.manifest`: measurement manifests and :func:`compute_manifest`.

docs/measurements.md describes the registers, the formats and the digest rules.
"""
