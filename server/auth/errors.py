"""The authentication error: every failure is a 401 with reason ``unauthenticated``."""

from __future__ import annotations

from tdx_boot_attest.server.errors import Unauthenticated


class AuthenticationError(Unauthenticated):
    """Credentials are missing, partial or invalid; ``message`` says which part is wrong."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
