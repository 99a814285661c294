"""The server's error hierarchy: every refusal carries a stable reason and an HTTP status."""

from __future__ import annotations

from typing import Any, ClassVar

from tdx_boot_attest.agent.protocol import Reason


def error_body(
    reason: Reason | str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON body of every refusal (plus structured ``details`` keys). Raises nothing."""
    code = Reason(reason).value
    return {**(details or {}), "detail": f"{code}: {message}", "reason": code, "message": message}


class ServerError(Exception):
    """Root of the server's deliberate errors: a stable ``reason`` and a client-safe message."""

    status_code: ClassVar[int] = 500
    default_reason: ClassVar[Reason] = Reason.INTERNAL_ERROR

    def __init__(
        self, message: str, reason: Reason | None = None, *, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason if reason is not None else self.default_reason
        # Structured facts for the refusal body (e.g. ``differences``); never secrets.
        self.details = details or {}

    @property
    def headers(self) -> dict[str, str]:
        """Extra HTTP headers that go with the refusal (Retry-After, ...)."""
        return {}

    def detail(self) -> str:
        """The one-line ``"<reason>: <message>"`` form used in bodies and console lines."""
        return f"{self.reason.value}: {self.message}"


class ConfigurationError(ServerError):
    """The server's settings or files are unusable (raised at start-up, before serving)."""

    default_reason = Reason.CONFIG_INVALID


class RequestInvalid(ServerError):
    """Malformed input: 422."""

    status_code = 422
    default_reason = Reason.REQUEST_INVALID


class NonceRejected(ServerError):
    """The nonce is missing, unknown, expired or already used: 401."""

    status_code = 401
    default_reason = Reason.NONCE_UNKNOWN


class Unauthenticated(ServerError):
    """The caller did not prove who it is: 401."""

    status_code = 401
    default_reason = Reason.UNAUTHENTICATED


class AttestationRefused(ServerError):
    """A verdict against the evidence (quote, measurements, REPORTDATA): 403."""

    status_code = 403
    default_reason = Reason.FORBIDDEN


class Forbidden(ServerError):
    """The caller may not do this: 403."""

    status_code = 403
    default_reason = Reason.FORBIDDEN


class NotFound(ServerError):
    """The named thing does not exist: 404."""

    status_code = 404
    default_reason = Reason.NOT_FOUND


class Conflict(ServerError):
    """The request conflicts with the current state: 409."""

    status_code = 409
    default_reason = Reason.CONFLICT


class RetryLater(ServerError):
    """A refusal the client may retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int, reason: Reason | None = None) -> None:
        super().__init__(message, reason)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ImagesChanging(RetryLater):
    """The image a boot matched was retired or re-keyed in every round of its verification:
    503 database_unavailable (the database's answer kept changing under it); nothing was
    spent or released."""

    status_code = 503
    default_reason = Reason.DATABASE_UNAVAILABLE


class CollateralUnavailable(RetryLater):
    """No valid (unexpired) collateral can be had for the quote's platform: 503."""

    status_code = 503
    default_reason = Reason.COLLATERAL_UNAVAILABLE


class DatabaseUnavailable(RetryLater):
    """The database did not answer in time, refused or dropped the connection, or cannot
    take writes (disk full, read-only): 503. Nothing was spent or released."""

    status_code = 503
    default_reason = Reason.DATABASE_UNAVAILABLE
