"""The events UEFI firmware and the Linux EFI stub write, and the digest rules behind them.

Digest rules (SHA-384 here; TPM banks use the same rules with their own hash):

* EV_EFI_VARIABLE_DRIVER_CONFIG / EV_EFI_VARIABLE_AUTHORITY: the whole event data,
  UEFI_VARIABLE_DATA (vendor GUID, u64 name length in characters, u64 data length,
  UTF-16LE name without NUL, data);
* EV_EFI_VARIABLE_BOOT (BootOrder, Boot####): the variable's data alone;
* EV_SEPARATOR, EV_EFI_ACTION: the event data (4 zero bytes; the action's ASCII text);
* EV_EFI_BOOT_SERVICES_APPLICATION: the image's Authenticode digest; the data is
  UEFI_IMAGE_LOAD_EVENT (load address, length, link-time address, device-path length,
  device path), which the digest does not cover;
* the Linux EFI stub's EV_EVENT_TAG events in PCR9 / RTMR2: LoadOptions (the command
  line) hashed as the UTF-16 buffer the firmware gave the kernel, NUL included; the
  initrd hashed as the file.

For QEMU direct boot, OVMF (X86QemuLoadImageLib) builds the LoadOptions from QEMU's
command line by widening each byte to one UTF-16 unit (so a UTF-8 multi-byte character
becomes several units, not one), appends `` initrd=initrd`` when QEMU passed an initrd,
and terminates with a UTF-16 NUL; with neither a command line nor an initrd it passes
no LoadOptions and the stub measures none. The kernel is loaded from the device path
VenMedia(QemuKernelLoaderFsMedia GUID)/\\kernel.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from typing import Final

from tdx_boot_attest.agent.eventlog import (
    EV_EFI_ACTION,
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_VARIABLE_AUTHORITY,
    EV_EFI_VARIABLE_BOOT,
    EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_EVENT_TAG,
    EV_SEPARATOR,
    LINUX_TAG_DESCRIPTIONS,
    LINUX_TAG_INITRD,
    LINUX_TAG_LOAD_OPTIONS,
    Event,
    computed_event,
    parse_variable,
    variable_event_data,
)

EFI_GLOBAL_VARIABLE: Final = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
EFI_IMAGE_SECURITY_DATABASE: Final = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
QEMU_KERNEL_LOADER_FS_MEDIA: Final = uuid.UUID("1428f772-b64a-441e-b8c3-9ebdd7f893c7")
SEPARATOR_DATA: Final = b"\x00\x00\x00\x00"
ACTION_CALLING_EFI_APPLICATION: Final = b"Calling EFI Application from Boot Option"
ACTION_EXIT_BOOT_SERVICES: Final = b"Exit Boot Services Invocation"
ACTION_EXIT_BOOT_SERVICES_SUCCESS: Final = b"Exit Boot Services Returned with Success"
INITRD_LOAD_OPTION_SUFFIX: Final = b" initrd=initrd"
KERNEL_FILE_NAME: Final = "kernel"
RTMR0_MR_INDEX: Final = 1
RTMR1_MR_INDEX: Final = 2
RTMR2_MR_INDEX: Final = 3
_IMAGE_LOAD: Final = struct.Struct("<QQQQ")
_DEVICE_PATH_END: Final = b"\x7f\xff\x04\x00"


def variable_event(
    vendor_guid: uuid.UUID, name: str, value: bytes, *, mr_index: int = RTMR0_MR_INDEX
) -> Event:
    """EV_EFI_VARIABLE_DRIVER_CONFIG for a variable (digest: the whole data). Raises nothing."""
    return computed_event(
        mr_index, EV_EFI_VARIABLE_DRIVER_CONFIG, variable_event_data(vendor_guid, name, value)
    )


def boot_variable_event(name: str, value: bytes, *, mr_index: int = RTMR0_MR_INDEX) -> Event:
    """EV_EFI_VARIABLE_BOOT for BootOrder/Boot#### (digest: the value alone). Raises nothing."""
    data = variable_event_data(EFI_GLOBAL_VARIABLE, name, value)
    return computed_event(mr_index, EV_EFI_VARIABLE_BOOT, data, hashlib.sha384(value).digest())


def separator_event(mr_index: int) -> Event:
    """EV_SEPARATOR with the success value (four zero bytes). Raises nothing."""
    return computed_event(mr_index, EV_SEPARATOR, SEPARATOR_DATA)


def efi_action_event(text: bytes, *, mr_index: int = RTMR1_MR_INDEX) -> Event:
    """EV_EFI_ACTION with ``text`` (digest: the text). Raises nothing."""
    return computed_event(mr_index, EV_EFI_ACTION, text)


def qemu_kernel_device_path() -> bytes:
    """VenMedia(QemuKernelLoaderFsMedia)/\\kernel, the path OVMF loads the kernel from."""
    vendor = struct.pack("<BBH", 4, 3, 20) + QEMU_KERNEL_LOADER_FS_MEDIA.bytes_le
    name = (KERNEL_FILE_NAME + "\x00").encode("utf-16-le")
    file_path = struct.pack("<BBH", 4, 4, 4 + len(name)) + name
    return vendor + file_path + _DEVICE_PATH_END


def image_load_event_data(device_path: bytes, *, location: int = 0, length: int = 0) -> bytes:
    """UEFI_IMAGE_LOAD_EVENT data; the load address and length are only known at boot."""
    return _IMAGE_LOAD.pack(location, length, 0, len(device_path)) + device_path


def kernel_event(authenticode_sha384: bytes, *, detail: str = "", data: bytes = b"") -> Event:
    """The direct-boot kernel's EV_EFI_BOOT_SERVICES_APPLICATION event in RTMR1.

    ``data`` defaults to an UEFI_IMAGE_LOAD_EVENT with the QEMU kernel path and zero
    address and length. Raises ValueError for a digest that is not 48 bytes.
    """
    payload = data or image_load_event_data(qemu_kernel_device_path())
    return computed_event(
        RTMR1_MR_INDEX,
        EV_EFI_BOOT_SERVICES_APPLICATION,
        payload,
        authenticode_sha384,
        detail=detail,
    )


def load_options(cmdline: bytes, *, with_initrd: bool) -> bytes:
    """The LoadOptions OVMF gives a directly booted kernel (empty: none). Raises ValueError.

    Each command-line byte becomes one UTF-16LE unit; `` initrd=initrd`` is appended
    when QEMU passed an initrd; a UTF-16 NUL ends the buffer.
    """
    if b"\x00" in cmdline:
        raise ValueError("a command line cannot contain a NUL byte")
    text = cmdline + (INITRD_LOAD_OPTION_SUFFIX if with_initrd else b"")
    if not text:
        return b""
    # latin-1 maps each byte to the code point of the same value: one UTF-16 unit per byte.
    return (text + b"\x00").decode("latin-1").encode("utf-16-le")


def linux_tag_data(tag: int) -> bytes:
    """TCG_PCClientTaggedEvent data as Linux 5.17+ writes it. Raises KeyError (unknown tag)."""
    description = LINUX_TAG_DESCRIPTIONS[tag].encode() + b"\x00"
    return struct.pack("<II", tag, len(description)) + description


def load_options_event(options: bytes, *, detail: str = "") -> Event:
    """The stub's LoadOptions tag in RTMR2 (digest: SHA-384 of ``options``). Raises nothing."""
    return computed_event(
        RTMR2_MR_INDEX,
        EV_EVENT_TAG,
        linux_tag_data(LINUX_TAG_LOAD_OPTIONS),
        hashlib.sha384(options).digest(),
        detail=detail,
    )


def initrd_event(initrd_sha384: bytes, *, detail: str = "") -> Event:
    """The stub's initrd tag in RTMR2 (digest: SHA-384 of the file). Raises ValueError."""
    return computed_event(
        RTMR2_MR_INDEX,
        EV_EVENT_TAG,
        linux_tag_data(LINUX_TAG_INITRD),
        initrd_sha384,
        detail=detail,
    )


def derived_digest(event: Event) -> bytes | None:
    """The SHA-384 digest ``event`` must carry given its own data, when a rule fixes it.

    None for events whose digest covers something the log does not hold (images, ACPI
    tables, the TD HOB, the stub's inputs). Raises nothing.
    """
    kind = event.event_type
    if kind in (EV_SEPARATOR, EV_EFI_ACTION):
        return hashlib.sha384(event.data).digest()
    if kind in (EV_EFI_VARIABLE_DRIVER_CONFIG, EV_EFI_VARIABLE_AUTHORITY):
        if parse_variable(event.data) is None:
            return None
        return hashlib.sha384(event.data).digest()
    if kind == EV_EFI_VARIABLE_BOOT:
        variable = parse_variable(event.data)
        return None if variable is None else hashlib.sha384(variable.data).digest()
    return None
