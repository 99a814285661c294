"""The authentication core with in-memory stores: SS58, signatures, window, replay, tokens."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from tdx_boot_attest.agent.protocol import Reason, SignatureScope
from tdx_boot_attest.server.auth import (
    AuthenticationError,
    Authenticator,
    BearerCredentials,
    HotkeyCredentials,
    RequestTarget,
    parse_credentials,
)
from tdx_boot_attest.server.auth.hotkey import hotkey_public_key
from tdx_boot_attest.server.auth.signing import (
    PURPOSE,
    parse_signature,
    signature_is_valid,
    signing_message,
)
from tdx_boot_attest.server.auth.tokens import new_token, token_digest
from tests.support.miner_keys import MinerKey, hotkey_address

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
NOW_S = int(NOW.timestamp())


class MemoryMiners:
    def __init__(self) -> None:
        self.hotkeys: set[str] = set()
        self.tokens: dict[str, str] = {}

    def is_registered(self, hotkey: str) -> bool:
        return hotkey in self.hotkeys

    def hotkey_for_token_digest(self, digest: str) -> tuple[str, str] | None:
        hotkey = self.tokens.get(digest)
        return None if hotkey is None else (hotkey, digest)


class MemoryReplays:
    def __init__(self) -> None:
        self.seen: dict[str, datetime] = {}

    def claim(self, signature_digest: str, hotkey: str, expires_at: datetime) -> bool:
        if signature_digest in self.seen:
            return False
        self.seen[signature_digest] = expires_at
        return True


@pytest.fixture
def miner() -> MinerKey:
    return MinerKey.from_seed(1)


@pytest.fixture
def miners(miner: MinerKey) -> MemoryMiners:
    store = MemoryMiners()
    store.hotkeys.add(miner.hotkey)
    return store


@pytest.fixture
def replays() -> MemoryReplays:
    return MemoryReplays()


@pytest.fixture
def auth(miners: MemoryMiners, replays: MemoryReplays) -> Authenticator:
    return Authenticator(miners, replays, clock=lambda: NOW)


def signed(miner: MinerKey, body: bytes = b"", timestamp: int = NOW_S) -> HotkeyCredentials:
    h = miner.headers(timestamp, body)
    creds = parse_credentials(
        h["X-Chutes-Hotkey"], h["X-Chutes-Nonce"], h["X-Chutes-Signature"], None
    )
    assert isinstance(creds, HotkeyCredentials)
    return creds


def refusal(excinfo: pytest.ExceptionInfo[AuthenticationError]) -> str:
    assert excinfo.value.reason is Reason.UNAUTHENTICATED
    assert excinfo.value.status_code == 401
    return excinfo.value.message


# --- SS58 hotkeys ----------------------------------------------------------------------------


def test_hotkey_round_trips_through_ss58(miner: MinerKey) -> None:
    assert miner.hotkey.startswith("5")
    assert hotkey_public_key(miner.hotkey) == miner.public_key


def test_known_ss58_address_decodes_to_its_key() -> None:
    # The well-known development account "Alice" (sr25519, generic prefix 42).
    alice = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
    key = hotkey_public_key(alice)
    assert key.hex() == "d43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d"
    assert hotkey_address(key) == alice


@pytest.mark.parametrize(
    "address",
    [
        "",
        "0xd43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d",
        "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQZ",  # checksum broken
        "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKut0Y",  # '0' is not base58
        "1",
        "F7L6",  # an account index, not a public key
        "5" * 200,
    ],
)
def test_bad_hotkey_addresses_are_refused(address: str) -> None:
    with pytest.raises(AuthenticationError) as excinfo:
        hotkey_public_key(address)
    assert "X-Chutes-Hotkey" in refusal(excinfo)


# --- the signed message and signatures -----------------------------------------------------------


def test_signing_message_uses_body_digest_or_purpose() -> None:
    assert signing_message("5Abc", "17", b"") == f"5Abc:17:{PURPOSE}".encode()
    assert signing_message("5Abc", "17", b'{"a":1}') == (
        b"5Abc:17:" + hashlib.sha256(b'{"a":1}').hexdigest().encode()
    )


def test_real_signature_verifies_and_a_changed_message_does_not(miner: MinerKey) -> None:
    message = signing_message(miner.hotkey, "100", b"body")
    signature = parse_signature(miner.sign(100, b"body"))
    assert signature_is_valid(miner.public_key, message, signature)
    assert not signature_is_valid(miner.public_key, message + b"x", signature)
    assert not signature_is_valid(MinerKey.from_seed(2).public_key, message, signature)
    assert not signature_is_valid(b"short", message, signature)


@pytest.mark.parametrize("text", ["zz" * 64, "ab" * 63, "ab" * 65, ""])
def test_malformed_signatures_are_refused(text: str) -> None:
    with pytest.raises(AuthenticationError) as excinfo:
        parse_signature(text)
    assert "X-Chutes-Signature" in refusal(excinfo)


def test_signature_with_0x_prefix_is_accepted(miner: MinerKey) -> None:
    assert len(parse_signature("0x" + miner.sign(1))) == 64


# --- parsing the headers -------------------------------------------------------------------------


def test_no_credentials_at_all() -> None:
    with pytest.raises(AuthenticationError) as excinfo:
        parse_credentials(None, None, None, None)
    assert "credentials missing" in refusal(excinfo)


@pytest.mark.parametrize(
    ("hotkey", "nonce", "signature", "missing"),
    [
        ("5Abc", None, None, "X-Chutes-Nonce, X-Chutes-Signature"),
        ("5Abc", "1", None, "X-Chutes-Signature"),
        (None, "1", "ab", "X-Chutes-Hotkey"),
        ("5Abc", "  ", "ab", "X-Chutes-Nonce"),
    ],
)
def test_partial_hotkey_credentials_name_what_is_missing(
    hotkey: str | None, nonce: str | None, signature: str | None, missing: str
) -> None:
    with pytest.raises(AuthenticationError) as excinfo:
        parse_credentials(hotkey, nonce, signature, None)
    assert refusal(excinfo) == f"partial credentials: missing {missing}"


def test_nonce_alone_counts_as_no_credentials() -> None:
    # X-Chutes-Nonce alone is also the boot nonce header: it does not start a signature.
    with pytest.raises(AuthenticationError) as excinfo:
        parse_credentials(None, "123", None, None)
    assert "credentials missing" in refusal(excinfo)


@pytest.mark.parametrize("nonce", ["12.5", "-5", "abc", "1" * 13, "١٢٣"])
def test_timestamp_must_be_whole_unix_seconds(nonce: str) -> None:
    with pytest.raises(AuthenticationError) as excinfo:
        parse_credentials("5Abc", nonce, "ab", None)
    assert "unix timestamp" in refusal(excinfo)


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer   ", "token"])
def test_malformed_authorization_header(header: str) -> None:
    with pytest.raises(AuthenticationError) as excinfo:
        parse_credentials(None, None, None, header)
    assert "Authorization" in refusal(excinfo)


def test_both_schemes_at_once_are_refused() -> None:
    with pytest.raises(AuthenticationError) as excinfo:
        parse_credentials("5Abc", "1", "ab", "Bearer x")
    assert "not both" in refusal(excinfo)


def test_bearer_token_never_appears_in_repr() -> None:
    creds = parse_credentials(None, None, None, "Bearer secret-value")
    assert isinstance(creds, BearerCredentials)
    assert creds.token == "secret-value"
    assert "secret-value" not in repr(creds)


# --- the authenticator ---------------------------------------------------------------------------


def test_signed_request_is_accepted(auth: Authenticator, miner: MinerKey) -> None:
    who = auth.authenticate(signed(miner, b'{"x":1}'), b'{"x":1}')
    assert (who.hotkey, who.method) == (miner.hotkey, "signature")


def test_signature_over_another_body_is_refused(auth: Authenticator, miner: MinerKey) -> None:
    with pytest.raises(AuthenticationError) as excinfo:
        auth.authenticate(signed(miner, b'{"x":1}'), b'{"x":2}')
    assert "does not verify" in refusal(excinfo)


def test_signature_by_another_key_is_refused(auth: Authenticator, miner: MinerKey) -> None:
    other = MinerKey.from_seed(99)
    forged = HotkeyCredentials(miner.hotkey, str(NOW_S), NOW_S, other.sign(NOW_S))
    with pytest.raises(AuthenticationError) as excinfo:
        auth.authenticate(forged, b"")
    assert "does not verify" in refusal(excinfo)


@pytest.mark.parametrize("offset", [601, -601, 10**6])
def test_timestamp_outside_the_window_is_refused(
    auth: Authenticator, miner: MinerKey, offset: int
) -> None:
    with pytest.raises(AuthenticationError) as excinfo:
        auth.authenticate(signed(miner, timestamp=NOW_S + offset), b"")
    assert "allowed: 600 s" in refusal(excinfo)


@pytest.mark.parametrize("offset", [600, -600, 0])
def test_timestamp_inside_the_window_is_accepted(
    auth: Authenticator, miner: MinerKey, offset: int
) -> None:
    assert auth.authenticate(signed(miner, timestamp=NOW_S + offset), b"").hotkey == miner.hotkey


def test_window_is_configurable(
    miners: MemoryMiners, replays: MemoryReplays, miner: MinerKey
) -> None:
    strict = Authenticator(miners, replays, clock=lambda: NOW, window=timedelta(seconds=30))
    with pytest.raises(AuthenticationError):
        strict.authenticate(signed(miner, timestamp=NOW_S - 31), b"")
    assert strict.authenticate(signed(miner, timestamp=NOW_S - 30), b"").hotkey == miner.hotkey


def test_absurd_timestamp_is_refused_not_crashed(auth: Authenticator, miner: MinerKey) -> None:
    creds = HotkeyCredentials(miner.hotkey, "9" * 12, int("9" * 12), miner.sign("9" * 12))
    with pytest.raises(AuthenticationError):
        auth.authenticate(creds, b"")


def test_replayed_signature_is_refused(
    auth: Authenticator, miner: MinerKey, replays: MemoryReplays
) -> None:
    creds = signed(miner)
    auth.authenticate(creds, b"")
    with pytest.raises(AuthenticationError) as excinfo:
        auth.authenticate(creds, b"")
    assert "already used" in refusal(excinfo)
    (expires_at,) = replays.seen.values()
    assert expires_at == NOW + timedelta(minutes=10)


def test_fresh_signature_of_the_same_message_is_accepted(
    auth: Authenticator, miner: MinerKey
) -> None:
    # sr25519 signatures are randomised: a second signing is a new, valid request.
    auth.authenticate(signed(miner), b"")
    assert auth.authenticate(signed(miner), b"").hotkey == miner.hotkey


def test_unregistered_hotkey_is_refused_and_leaves_no_replay_record(
    auth: Authenticator, replays: MemoryReplays
) -> None:
    stranger = MinerKey.from_seed(7)
    with pytest.raises(AuthenticationError) as excinfo:
        auth.authenticate(signed(stranger), b"")
    assert "not a registered miner" in refusal(excinfo)
    assert replays.seen == {}


def test_bearer_token_is_accepted_by_its_digest(
    auth: Authenticator, miners: MemoryMiners, miner: MinerKey
) -> None:
    token = new_token()
    miners.tokens[token_digest(token)] = miner.hotkey
    who = auth.authenticate(BearerCredentials(token), b"")
    assert (who.hotkey, who.method) == (miner.hotkey, "token")


def test_unknown_bearer_token_is_refused(
    auth: Authenticator, miners: MemoryMiners, miner: MinerKey
) -> None:
    miners.tokens[token_digest(new_token())] = miner.hotkey
    with pytest.raises(AuthenticationError) as excinfo:
        auth.authenticate(BearerCredentials(new_token()), b"")
    assert refusal(excinfo) == "bearer token is not valid"


def test_tokens_are_random_and_stored_as_sha256() -> None:
    first, second = new_token(), new_token()
    assert first != second
    assert len(first) > 40
    assert token_digest(first) == hashlib.sha256(first.encode()).hexdigest()


# --- signatures that also cover the method and path --------------------------------------------

TARGET = RequestTarget("GET", "/servers/node-1")


def scoped(miner: MinerKey, method: str, path: str, body: bytes = b"") -> HotkeyCredentials:
    h = miner.headers(NOW_S, body, method, path)
    creds = parse_credentials(
        h["X-Chutes-Hotkey"],
        h["X-Chutes-Nonce"],
        h["X-Chutes-Signature"],
        None,
        h["X-Attest-Signature-Scope"],
    )
    assert isinstance(creds, HotkeyCredentials)
    return creds


def test_request_scope_signature_is_accepted_for_its_request(
    auth: Authenticator, miner: MinerKey
) -> None:
    creds = scoped(miner, "GET", "/servers/node-1")
    assert creds.scope is SignatureScope.REQUEST
    assert auth.authenticate(creds, b"", TARGET).hotkey == miner.hotkey


@pytest.mark.parametrize(
    "target",
    [RequestTarget("DELETE", "/servers/node-1"), RequestTarget("GET", "/servers/node-2")],
)
def test_request_scope_signature_does_not_verify_for_another_request(
    auth: Authenticator, miner: MinerKey, target: RequestTarget
) -> None:
    with pytest.raises(AuthenticationError) as excinfo:
        auth.authenticate(scoped(miner, "GET", "/servers/node-1"), b"", target)
    assert "body, method and path" in refusal(excinfo)


def test_a_chutes_signature_still_verifies_whatever_the_request(
    auth: Authenticator, miner: MinerKey
) -> None:
    # The Chutes form covers hotkey, timestamp and body only: what the scope adds.
    creds = signed(miner)
    assert creds.scope is SignatureScope.BODY
    assert auth.authenticate(creds, b"", RequestTarget("DELETE", "/x")).hotkey == miner.hotkey


def test_the_stronger_form_can_be_required(
    miners: MemoryMiners, replays: MemoryReplays, miner: MinerKey
) -> None:
    strict = Authenticator(miners, replays, clock=lambda: NOW, require_request_scope=True)
    with pytest.raises(AuthenticationError) as excinfo:
        strict.authenticate(signed(miner), b"", TARGET)
    assert "X-Attest-Signature-Scope: request" in refusal(excinfo)
    assert replays.seen == {}
    assert strict.authenticate(scoped(miner, "GET", "/servers/node-1"), b"", TARGET)


def test_unknown_signature_scope_is_refused() -> None:
    with pytest.raises(AuthenticationError) as excinfo:
        parse_credentials("5Abc", "1", "ab", None, "everything")
    assert "X-Attest-Signature-Scope must be body or request" in refusal(excinfo)
    creds = parse_credentials("5Abc", "1", "ab", None, " Request ")
    assert isinstance(creds, HotkeyCredentials) and creds.scope is SignatureScope.REQUEST
