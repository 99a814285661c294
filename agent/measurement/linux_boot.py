"""The Linux x86 boot-protocol setup header, and QEMU's direct-boot patching of it.

With ``-kernel``, QEMU's ``x86_load_linux`` (hw/i386/x86.c, later x86-common.c) reads the
bzImage, writes boot-loader fields into a copy of its setup header, and hands the
firmware the patched setup sectors (``FW_CFG_SETUP_DATA``) and the rest of the file
(``FW_CFG_KERNEL_DATA``). OVMF's QemuKernelLoaderFsDxe joins the two into the file
``kernel`` and loads it, so the firmware measures the file with these bytes changed:

* 0x1FA ``vid_mode``, only when the command line holds ``vga=``;
* 0x210 ``type_of_loader`` = 0xB0 (protocol >= 2.00);
* 0x211 ``loadflags`` |= 0x80 (CAN_USE_HEAP) and 0x224 ``heap_end_ptr`` =
  command-line address - setup address - 0x200 (protocol >= 2.01);
* 0x228 ``cmd_line_ptr`` (protocol >= 2.02; older kernels get 0x20/0x22 instead);
* 0x218 ``ramdisk_image`` and 0x21C ``ramdisk_size`` when an initrd is given. The
  address is ``(initrd_max - initrd size) & ~4095``, where ``initrd_max`` is the
  header's ``initrd_addr_max`` (0x22C, protocol >= 2.03; 0x37FFFFFF before), or 4 GiB - 1
  for a kernel that sets XLF_CAN_BE_LOADED_ABOVE_4G when QEMU is new enough to honour
  it (:data:`INITRD_MAX_ABOVE_4G_FLAG`), lowered to ``RAM below 4 GiB - ACPI data size - 1``.

QEMU releases from 2025 on leave the header alone for confidential guests ("x86/loader:
Don't update kernel header for CoCo VMs"), so a platform profile names which applies.
Everything here is pure: bytes in, bytes out.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Final

from tdx_boot_attest.agent.measurement.errors import SetupHeaderError

HDRS_MAGIC: Final = b"HdrS"
HEADER_MAGIC_OFFSET: Final = 0x202
MIN_KERNEL_BYTES: Final = 0x1000  # QEMU reads 8 KiB of header; a bzImage is far larger
LOADER_TYPE_QEMU: Final = 0xB0
CAN_USE_HEAP: Final = 0x80
LOADED_HIGH: Final = 0x01
XLF_CAN_BE_LOADED_ABOVE_4G: Final = 0x02
DEFAULT_INITRD_MAX: Final = 0x37FFFFFF
UINT32_MAX: Final = 0xFFFFFFFF

# How QEMU bounds the initrd's address (the platform profile names one).
INITRD_MAX_HEADER: Final = "initrd-addr-max"  # older QEMU: initrd_addr_max from the header
INITRD_MAX_ABOVE_4G_FLAG: Final = "above-4g-flag"  # QEMU 7.2+: the XLF flag lifts it to 4 GiB
INITRD_MAX_RULES: Final = (INITRD_MAX_HEADER, INITRD_MAX_ABOVE_4G_FLAG)

_VGA: Final = re.compile(rb"vga=")
# The numbers C's strtoul(..., 0) reads whole, as QEMU parses ``vga=``.
_DECIMAL: Final = re.compile(rb"[1-9][0-9]*")
_HEXADECIMAL: Final = re.compile(rb"0[xX][0-9a-fA-F]+")
_OCTAL: Final = re.compile(rb"0[0-7]*")


@dataclass(frozen=True, slots=True)
class SetupHeader:
    """The fields of the setup header that QEMU reads."""

    setup_sects: int
    protocol: int
    loadflags: int
    initrd_addr_max: int
    xloadflags: int

    @property
    def setup_bytes(self) -> int:
        """Bytes of real-mode setup code QEMU hands over as FW_CFG_SETUP_DATA."""
        return ((self.setup_sects or 4) + 1) * 512


def read_setup_header(kernel: bytes | memoryview) -> SetupHeader:
    """The setup header of a bzImage. Raises SetupHeaderError when there is none."""
    view = memoryview(kernel)
    if len(view) < MIN_KERNEL_BYTES:
        raise SetupHeaderError(
            f"the kernel is {len(view)} bytes, too short for a bzImage "
            f"({MIN_KERNEL_BYTES} at least)"
        )
    if bytes(view[HEADER_MAGIC_OFFSET : HEADER_MAGIC_OFFSET + 4]) != HDRS_MAGIC:
        raise SetupHeaderError(
            'no "HdrS" boot-protocol signature at 0x202: not a Linux bzImage '
            "(QEMU would boot it as multiboot or PVH, which this calculator does not model)"
        )
    header = SetupHeader(
        setup_sects=view[0x1F1],
        protocol=struct.unpack_from("<H", view, 0x206)[0],
        loadflags=view[0x211],
        initrd_addr_max=struct.unpack_from("<I", view, 0x22C)[0],
        xloadflags=struct.unpack_from("<H", view, 0x236)[0],
    )
    if header.setup_bytes > len(view):
        raise SetupHeaderError(
            f"setup_sects {header.setup_sects} claims {header.setup_bytes} bytes of setup code, "
            f"more than the {len(view)}-byte kernel (QEMU refuses it)"
        )
    return header


def initrd_address(
    header: SetupHeader,
    initrd_size: int,
    *,
    below_4g_bytes: int,
    acpi_data_size: int,
    rule: str,
) -> int:
    """The guest address QEMU loads the initrd at. Raises SetupHeaderError (too large)."""
    if rule not in INITRD_MAX_RULES:
        raise ValueError(f"initrd rule must be one of {', '.join(INITRD_MAX_RULES)}")
    if header.protocol < 0x200:
        raise SetupHeaderError("the kernel is too old to load an initrd (protocol < 2.00)")
    if (
        rule == INITRD_MAX_ABOVE_4G_FLAG
        and header.protocol >= 0x20C
        and header.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G
    ):
        initrd_max = UINT32_MAX
    elif header.protocol >= 0x203:
        initrd_max = header.initrd_addr_max
    else:
        initrd_max = DEFAULT_INITRD_MAX
    ceiling = below_4g_bytes - acpi_data_size
    if ceiling <= 0:
        raise SetupHeaderError("the TD has no RAM below 4 GiB above the ACPI data")
    if initrd_max >= ceiling:
        initrd_max = ceiling - 1
    if initrd_size >= initrd_max:
        raise SetupHeaderError(
            f"the initrd ({initrd_size} bytes) does not fit below {initrd_max:#x}: "
            "QEMU refuses it (give the TD more memory)"
        )
    return (initrd_max - initrd_size) & ~0xFFF


def qemu_patched_kernel(
    kernel: bytes,
    cmdline: bytes,
    initrd_size: int | None,
    *,
    below_4g_bytes: int,
    acpi_data_size: int,
    rule: str,
) -> bytes:
    """``kernel`` with the setup header as QEMU's direct boot writes it.

    ``cmdline`` is the command line's bytes as given to ``-append``; ``initrd_size`` is
    None without ``-initrd``. Raises SetupHeaderError for a kernel QEMU would refuse.
    """
    header = read_setup_header(kernel)
    patched = bytearray(kernel[: header.setup_bytes])
    protocol = header.protocol
    if protocol < 0x202 or not header.loadflags & LOADED_HIGH:
        # A low or an ancient high kernel: setup code at 0x90000, command line below 0x9A000.
        real_addr, cmdline_addr = 0x90000, 0x9A000 - (len(cmdline) + 1)
    else:
        real_addr, cmdline_addr = 0x10000, 0x20000
    if protocol >= 0x202:
        struct.pack_into("<I", patched, 0x228, cmdline_addr)
    else:
        struct.pack_into("<HH", patched, 0x20, 0xA33F, (cmdline_addr - real_addr) & 0xFFFF)
    video_mode = _video_mode(cmdline)
    if video_mode is not None:
        struct.pack_into("<H", patched, 0x1FA, video_mode)
    if protocol >= 0x200:
        patched[0x210] = LOADER_TYPE_QEMU
    if protocol >= 0x201:
        patched[0x211] |= CAN_USE_HEAP
        struct.pack_into("<H", patched, 0x224, (cmdline_addr - real_addr - 0x200) & 0xFFFF)
    if initrd_size is not None:
        address = initrd_address(
            header,
            initrd_size,
            below_4g_bytes=below_4g_bytes,
            acpi_data_size=acpi_data_size,
            rule=rule,
        )
        struct.pack_into("<II", patched, 0x218, address, initrd_size)
    return bytes(patched) + kernel[header.setup_bytes :]


def _video_mode(cmdline: bytes) -> int | None:
    """QEMU's reading of ``vga=`` (normal, ext, ask or a number); None when absent."""
    found = _VGA.search(cmdline)
    if found is None:
        return None
    rest = cmdline[found.end() :]
    for word, mode in ((b"normal", 0xFFFF), (b"ext", 0xFFFE), (b"ask", 0xFFFD)):
        if rest.startswith(word):
            return mode
    token = rest.split(b" ", 1)[0]
    if _DECIMAL.fullmatch(token):
        value = int(token)
    elif _HEXADECIMAL.fullmatch(token):
        value = int(token[2:], 16)
    elif _OCTAL.fullmatch(token):
        value = int(token, 8)
    else:
        raise SetupHeaderError(
            f"QEMU refuses the command line: invalid 'vga=' value {token[:20]!r}"
        )
    if value > UINT32_MAX:
        raise SetupHeaderError("QEMU refuses the command line: 'vga=' value out of range")
    return value & 0xFFFF
