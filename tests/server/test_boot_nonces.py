"""Stateless boot nonces: what a nonce carries, and that only the key holder makes them."""

from __future__ import annotations

import datetime as dt
import secrets

import pytest

from tdx_boot_attest.server.boot.nonces import KEY_PURPOSE, BootNonces
from tdx_boot_attest.server.sealing import MasterKey

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, 500000, tzinfo=dt.UTC)


@pytest.fixture
def nonces() -> BootNonces:
    return BootNonces(secrets.token_bytes(32))


def test_a_nonce_is_32_bytes_and_carries_its_expiry(nonces: BootNonces) -> None:
    issued = nonces.issue(NOW, 600)
    assert len(issued.value) == 32
    assert issued.hex == issued.value.hex() and len(issued.hex) == 64
    assert issued.expires_at == (NOW + dt.timedelta(seconds=600)).replace(microsecond=0)
    assert nonces.expiry_of(issued.value) == issued.expires_at


def test_nonces_differ(nonces: BootNonces) -> None:
    assert len({nonces.issue(NOW, 600).value for _ in range(1000)}) == 1000


@pytest.mark.parametrize("position", range(32))
def test_any_changed_byte_makes_it_unknown(nonces: BootNonces, position: int) -> None:
    changed = bytearray(nonces.issue(NOW, 600).value)
    changed[position] ^= 0x01
    assert nonces.expiry_of(bytes(changed)) is None


def test_another_key_and_random_bytes_are_unknown(nonces: BootNonces) -> None:
    other = BootNonces(secrets.token_bytes(32))
    assert other.expiry_of(nonces.issue(NOW, 600).value) is None
    assert nonces.expiry_of(secrets.token_bytes(32)) is None
    assert nonces.expiry_of(b"\x01" * 31) is None


def test_the_nonce_key_needs_both_the_master_key_and_the_salt() -> None:
    raw = secrets.token_bytes(32)
    master = MasterKey(raw)
    salt = secrets.token_bytes(32)
    key = master.derive_key(KEY_PURPOSE, salt)
    assert key == MasterKey(raw).derive_key(KEY_PURPOSE, salt)
    assert key != master.derive_key(KEY_PURPOSE, secrets.token_bytes(32))
    assert key != MasterKey(secrets.token_bytes(32)).derive_key(KEY_PURPOSE, salt)
    assert key != master.derive_key(b"another purpose", salt)
    assert key.hex() not in repr(BootNonces(key))
