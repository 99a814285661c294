"""The calculator's errors: one root type, a typed subclass per kind of bad input.

Every class is a ValueError (the inputs are values, not I/O) and carries a stable
``reason`` code that command lines print and tests assert on; the message names what is
wrong and where.
"""

from __future__ import annotations

from typing import ClassVar


class MeasurementError(ValueError):
    """Root of every error the measurement calculator raises."""

    reason: ClassVar[str] = "measurement_invalid"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class PeFormatError(MeasurementError):
    """The bytes are not a PE/COFF image whose Authenticode digest can be computed."""

    reason: ClassVar[str] = "pe_malformed"


class SetupHeaderError(MeasurementError):
    """The kernel has no usable Linux boot-protocol setup header, or QEMU would refuse it."""

    reason: ClassVar[str] = "setup_header_invalid"


class FirmwareFormatError(MeasurementError):
    """The firmware file has no well-formed TDVF metadata."""

    reason: ClassVar[str] = "tdvf_metadata_invalid"


class MemorySizeError(MeasurementError):
    """The memory size cannot be a TD's RAM size (or a size text cannot be read)."""

    reason: ClassVar[str] = "memory_size_invalid"


class PlatformProfileError(MeasurementError):
    """A platform profile is malformed, of an unknown version, or cannot serve a request."""

    reason: ClassVar[str] = "platform_profile_invalid"


class ReferenceMismatchError(MeasurementError):
    """A reference boot's event log does not replay to its quote's registers."""

    reason: ClassVar[str] = "reference_mismatch"


class UnsupportedBootError(MeasurementError):
    """A reference boot is not a QEMU direct boot the calculator can model."""

    reason: ClassVar[str] = "boot_path_unsupported"


class ManifestError(MeasurementError):
    """A measurement manifest is malformed, of an unknown version, or inconsistent."""

    reason: ClassVar[str] = "manifest_invalid"
