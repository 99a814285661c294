"""SS58 hotkey addresses (Substrate's address format) decoded to sr25519 public keys."""

from __future__ import annotations

from typing import Final

from scalecodec.utils.ss58 import ss58_decode

from tdx_boot_attest.server.auth.errors import AuthenticationError

SR25519_PUBLIC_KEY_BYTES: Final = 32
# The Substrate generic prefix, which Bittensor and Chutes hotkeys use.
DEFAULT_SS58_FORMAT: Final = 42
# An SS58 address of a 32-byte key is 47-48 characters; anything far longer is not one.
_MAX_ADDRESS_CHARS: Final = 64


def hotkey_public_key(address: str) -> bytes:
    """Return the 32-byte sr25519 public key an SS58 ``address`` encodes.

    Raises AuthenticationError when the address is not SS58 (bad characters, length,
    checksum, reserved format) or does not encode a 32-byte public key.
    """
    # ss58_decode passes "0x..." through unchanged: a raw hex key is not an address.
    if not address or len(address) > _MAX_ADDRESS_CHARS or address.startswith("0x"):
        raise AuthenticationError("X-Chutes-Hotkey is not an SS58 address")
    try:
        decoded_hex = ss58_decode(address)
    except (ValueError, IndexError) as exc:
        raise AuthenticationError(f"X-Chutes-Hotkey is not a valid SS58 address ({exc})") from None
    public_key = bytes.fromhex(decoded_hex)
    if len(public_key) != SR25519_PUBLIC_KEY_BYTES:
        raise AuthenticationError("X-Chutes-Hotkey does not encode a 32-byte sr25519 public key")
    return public_key
