"""Miner authentication: sr25519 hotkey signatures (Chutes-compatible) and bearer API tokens.

The pieces are kept apart so each can be tested alone:

* :mod:`server.auth.hotkey`  — SS58 hotkey addresses -> sr25519 public keys;
* :mod:`server.auth.signing` — the signed message and sr25519 signature checks;
* :mod:`server.auth.tokens`  — issuing and hashing per-miner API tokens;
* :mod:`server.auth.credentials` — the credential headers of one request, parsed;
* :mod:`server.auth.authenticator` — the policy: window, registry, replay, token lookup.
"""

from tdx_boot_attest.server.auth.authenticator import (
    AuthenticatedMiner,
    Authenticator,
    MinerLookup,
    ReplayGuard,
    RequestTarget,
)
from tdx_boot_attest.server.auth.credentials import (
    BearerCredentials,
    HotkeyCredentials,
    parse_credentials,
)
from tdx_boot_attest.server.auth.errors import AuthenticationError

__all__ = [
    "AuthenticatedMiner",
    "AuthenticationError",
    "Authenticator",
    "BearerCredentials",
    "HotkeyCredentials",
    "MinerLookup",
    "ReplayGuard",
    "RequestTarget",
    "parse_credentials",
]
