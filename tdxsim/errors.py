"""The simulator's error types: one root, typed subclasses, each with a stable ``reason``."""

from __future__ import annotations

from tdx_boot_attest.agent.protocol import Reason


class TdxSimError(Exception):
    """Root of every error the simulator raises on purpose; ``reason`` is a stable code."""

    reason: str = "tdxsim_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class QuoteFormatError(TdxSimError):
    """Bytes are not a well-formed DCAP quote."""

    reason = Reason.QUOTE_MALFORMED


class QuoteVersionError(QuoteFormatError):
    """A quote version, body type or key type this code does not handle."""

    reason = Reason.QUOTE_VERSION_UNSUPPORTED


class NotTdxError(QuoteFormatError):
    """A well-formed quote that is not a TDX quote (e.g. an SGX enclave quote)."""

    reason = Reason.NOT_TDX


class ProfileError(TdxSimError):
    """A measurement profile is missing, unreadable or has a bad field."""

    reason = "profile_invalid"


class MeasuredBootError(TdxSimError):
    """A simulated boot cannot be computed: an input cannot be read, or the measurement
    calculator refuses it (then ``reason`` is the calculator's: ``pe_malformed``, ...)."""

    reason = "measured_boot_invalid"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class PkiError(TdxSimError):
    """The simulated PKI cannot be built, read or used (bad key, unknown certificate)."""

    reason = "pki_invalid"


class CollateralError(TdxSimError):
    """Collateral parameters are inconsistent (dates, TCB levels, statuses)."""

    reason = "collateral_invalid"


class StateError(TdxSimError):
    """A simulator state directory is missing, incomplete or already initialised."""

    reason = "state_invalid"
