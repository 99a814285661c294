"""The agent's error tree: one root type, typed subclasses, each with a stable ``reason``.

The reason goes into the console line (``tdx-boot-attest: FAILED reason=...``) and picks
the exit code; tests assert on it, never on message text. Server refusals keep the
server's own reason code (agent.protocol.Reason); the agent's local failures use
``LocalReason``.
"""

from __future__ import annotations

import enum


class LocalReason(enum.StrEnum):
    """Reason codes for failures the agent detects itself (no server verdict involved)."""

    CONFIG_INVALID = "config_invalid"
    TSM_UNAVAILABLE = "tsm_unavailable"
    TSM_PROVIDER_UNSUPPORTED = "tsm_provider_unsupported"
    TSM_BUSY = "tsm_busy"
    TSM_GENERATION_RACE = "tsm_generation_race"
    TSM_INVALID = "tsm_invalid"
    TSM_IO_ERROR = "tsm_io_error"
    TSM_TIMEOUT = "tsm_timeout"
    TSM_ERROR = "tsm_error"
    QUOTE_UNREADABLE = "quote_unreadable"
    EVENT_LOG_UNAVAILABLE = "event_log_unavailable"
    IDENTITY_UNAVAILABLE = "identity_unavailable"
    SERVER_UNREACHABLE = "server_unreachable"
    SERVER_ERROR = "server_error"
    TLS_UNTRUSTED = "tls_untrusted"
    RESPONSE_INVALID = "response_invalid"
    KEY_UNSEAL_FAILED = "key_unseal_failed"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    DEVICE_NOT_FOUND = "device_not_found"
    KEY_REJECTED = "key_rejected"
    CRYPTSETUP_FAILED = "cryptsetup_failed"
    MAPPER_MISSING = "mapper_missing"
    VOLUME_UNKNOWN = "volume_unknown"
    HOTKEY_INVALID = "hotkey_invalid"
    ACTION_FAILED = "action_failed"
    INTERRUPTED = "interrupted"
    INTERNAL_ERROR = "internal_error"


class AgentError(Exception):
    """Root of every error the agent reports; ``reason`` is a stable machine-readable code."""

    exit_code = 1

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = str(reason)
        self.message = message
        # Set once the console line is out, so the top-level handler does not repeat it.
        self.reported = False


class ConfigError(AgentError):
    """The configuration (file or kernel command line) is unusable; names key and source."""

    exit_code = 2

    def __init__(self, message: str, reason: str = LocalReason.CONFIG_INVALID) -> None:
        super().__init__(reason, message)


class TsmError(AgentError):
    """configfs-tsm could not produce a quote (no provider, busy, I/O error, ...)."""

    exit_code = 3


class TransportError(AgentError):
    """The server could not be reached or answered something unusable."""

    exit_code = 4


class TransientError(TransportError):
    """A failure worth retrying with a fresh nonce and quote (connection, 5xx, 429, ...).

    ``retry_after`` is the server's Retry-After in seconds, when it sent one.
    """

    def __init__(self, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(reason, message)
        self.retry_after = retry_after


class DeadlineExceeded(TransportError):
    """The overall deadline passed before the server released the key."""

    def __init__(self, message: str) -> None:
        super().__init__(LocalReason.DEADLINE_EXCEEDED, message)


class ServerRefused(AgentError):
    """The server definitively refused (attestation verdict, bad request, auth failure)."""

    exit_code = 5

    def __init__(self, reason: str, message: str, status: int) -> None:
        super().__init__(reason, message)
        self.status = status


class DiskError(AgentError):
    """The LUKS device did not appear, or cryptsetup did not open it."""

    exit_code = 6


class ActionError(AgentError):
    """The failure action (poweroff, reboot, prompt fallback) could not be run."""

    exit_code = 7

    def __init__(self, message: str) -> None:
        super().__init__(LocalReason.ACTION_FAILED, message)
