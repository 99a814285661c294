"""agent.http_client against a scripted HTTP server: retries, refusals, key opening, deadline."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from tdx_boot_attest.agent import protocol
from tdx_boot_attest.agent.errors import (
    ConfigError,
    DeadlineExceeded,
    LocalReason,
    ServerRefused,
    TransientError,
    TransportError,
    TsmError,
)
from tdx_boot_attest.agent.http_client import (
    BootClient,
    Deadline,
    ReleasedKey,
    error_from_response,
    make_session,
    new_key_pair,
    parse_error_body,
    parse_retry_after,
    released,
    retry_until,
)
from tdx_boot_attest.agent.identity import load_or_create_identity
from tdx_boot_attest.agent.quote import parse_quote
from tests.agent.conftest import synthetic_quote
from tests.support.scripted_http import Answer, Request, ScriptedServer

PASSPHRASE = b"correct horse battery staple \x00\xff"
NONCE_HEX = "ab" * 32


class FakeClock:
    """A monotonic clock that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class SyntheticQuotes:
    def __init__(self) -> None:
        self.calls: list[bytes] = []

    def get_quote(self, report_data: bytes) -> bytes:
        self.calls.append(report_data)
        return synthetic_quote(report_data)


def nonce_answer(request: Request) -> Answer:
    return Answer(200, {"nonce": NONCE_HEX, "expires_at": "2030-01-01T00:00:00Z"})


def release(request: Request) -> Answer:
    """What a correct server does: check REPORTDATA (v1, or v2 with an identity key), seal
    the passphrase to the key."""
    body = json.loads(request.body)
    public = base64.b64decode(body["public_key"])
    nonce = bytes.fromhex(request.headers[protocol.NONCE_HEADER])
    quoted = parse_quote(base64.b64decode(body["quote"])).report_data
    kem = protocol.parse_kem(body["kem"])
    identity = base64.b64decode(body["identity_key"]) if "identity_key" in body else None
    check = protocol.check_boot_report_data(quoted, nonce, kem, public, identity)
    assert check.nonce_matches and check.public_key_matches
    assert len(public) == protocol.PUBLIC_KEY_BYTES[kem]
    if kem is protocol.Kem.X25519:
        recipient: object = X25519PublicKey.from_public_bytes(public)
    else:
        recipient = hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(public[:1184]),
            X25519PublicKey.from_public_bytes(public[1184:]),
        )
    sealed = protocol.hpke_suite(kem).encrypt(
        PASSPHRASE,
        recipient,  # type: ignore[arg-type]
        protocol.key_release_info(nonce),
    )
    return Answer(
        200,
        {
            "attestation_id": "att-1",
            "image": "golden",
            "verified_at": "2030-01-01T00:00:00Z",
            "sealed_key": protocol.b64encode(sealed),
        },
    )


def refusal(status: int, reason: str, message: str, **headers: str) -> Answer:
    return Answer(
        status, {"detail": f"{reason}: {message}", "reason": reason, "message": message}, headers
    )


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    with scripted.running():
        yield scripted


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def client(server: ScriptedServer, clock: FakeClock, quotes: SyntheticQuotes) -> BootClient:
    return BootClient(
        server.url,
        make_session(None),
        quotes,
        connect_timeout=2,
        read_timeout=2,
        clock=clock,
        sleep=clock.sleep,
    )


def fetch(server: ScriptedServer, clock: FakeClock, deadline: float = 60) -> ReleasedKey:
    return client(server, clock, SyntheticQuotes()).fetch_key(deadline)


def test_happy_path_opens_the_sealed_key(server: ScriptedServer, clock: FakeClock) -> None:
    server.script("GET", protocol.NONCE_PATH, nonce_answer)
    server.script("POST", protocol.BOOT_ATTESTATION_PATH, release)
    quotes = SyntheticQuotes()
    key = client(server, clock, quotes).fetch_key(60)
    assert bytes(key.key) == PASSPHRASE
    assert (key.image, key.attestation_id) == ("golden", "att-1")
    assert isinstance(key.key, bytearray)
    post = server.requests[-1]
    assert post.headers[protocol.NONCE_HEADER] == NONCE_HEX
    assert quotes.calls[0][:32] == bytes.fromhex(NONCE_HEX)
    assert clock.sleeps == []


def test_v2_boot_binds_the_identity_key_in_every_attempt(
    server: ScriptedServer, clock: FakeClock, memory_dir: Path
) -> None:
    identity = load_or_create_identity(memory_dir / "tdx-boot-attest" / "identity.key")
    server.script("GET", protocol.NONCE_PATH, nonce_answer)
    server.script(
        "POST",
        protocol.BOOT_ATTESTATION_PATH,
        refusal(503, "collateral_unavailable", "PCCS down"),
        release,
    )
    quotes = SyntheticQuotes()
    boot = BootClient(
        server.url, make_session(None), quotes, clock=clock, sleep=clock.sleep, identity=identity
    )
    assert bytes(boot.fetch_key(60).key) == PASSPHRASE
    posts = [json.loads(r.body) for r in server.requests if r.method == "POST"]
    assert [base64.b64decode(p["identity_key"]) for p in posts] == [identity.public_key] * 2
    # A fresh HPKE key each attempt, the same identity key, both bound by REPORTDATA.
    assert posts[0]["public_key"] != posts[1]["public_key"]
    for body, report_data in zip(posts, quotes.calls, strict=True):
        hpke_key = base64.b64decode(body["public_key"])
        assert report_data == protocol.boot_report_data(
            bytes.fromhex(NONCE_HEX), protocol.Kem.X25519, hpke_key, identity.public_key
        )
        assert report_data[32:] != protocol.public_key_digest(hpke_key)


def mlkem_available() -> bool:
    from cryptography.exceptions import UnsupportedAlgorithm

    try:
        mlkem.MLKEM768PrivateKey.generate()
    except UnsupportedAlgorithm:
        return False
    return True


def test_hybrid_kem_without_ml_kem_is_a_clear_configuration_error(
    server: ScriptedServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.exceptions import UnsupportedAlgorithm

    def unsupported() -> None:
        raise UnsupportedAlgorithm("ML-KEM-768 is not supported by this backend.")

    monkeypatch.setattr(mlkem.MLKEM768PrivateKey, "generate", unsupported)
    with pytest.raises(ConfigError) as caught:
        new_key_pair(protocol.Kem.MLKEM768_X25519)
    assert caught.value.reason == "kem_unsupported"
    assert "kem = x25519" in caught.value.message


def test_hybrid_post_quantum_kem(server: ScriptedServer, clock: FakeClock) -> None:
    """ML-KEM needs cryptography's OpenSSL to provide it (not the oldest supported build)."""
    if not mlkem_available():
        with pytest.raises(ConfigError):
            new_key_pair(protocol.Kem.MLKEM768_X25519)
        return
    server.script("GET", protocol.NONCE_PATH, nonce_answer)
    server.script("POST", protocol.BOOT_ATTESTATION_PATH, release)
    boot = BootClient(
        server.url,
        make_session(None),
        SyntheticQuotes(),
        clock=clock,
        sleep=clock.sleep,
        kem=protocol.Kem.MLKEM768_X25519,
    )
    key = boot.fetch_key(60)
    assert bytes(key.key) == PASSPHRASE
    assert json.loads(server.requests[-1].body)["kem"] == "mlkem768-x25519"


def test_wipe_zeroes_the_buffer(server: ScriptedServer, clock: FakeClock) -> None:
    server.script("GET", protocol.NONCE_PATH, nonce_answer)
    server.script("POST", protocol.BOOT_ATTESTATION_PATH, release)
    key = fetch(server, clock)
    buffer = key.key
    view_before = bytes(buffer)
    assert view_before == PASSPHRASE
    with released(key):
        pass
    assert buffer == bytearray()


def test_fresh_nonce_key_and_quote_every_attempt(server: ScriptedServer, clock: FakeClock) -> None:
    server.script("GET", protocol.NONCE_PATH, nonce_answer)
    server.script(
        "POST",
        protocol.BOOT_ATTESTATION_PATH,
        refusal(401, "nonce_expired", "nonce expired"),
        refusal(503, "collateral_unavailable", "PCCS down", **{"Retry-After": "3"}),
        refusal(429, "rate_limited", "slow down", **{"Retry-After": "7"}),
        Answer(502, raw=b"<html>bad gateway</html>"),
        refusal(503, "database_unavailable", "database down", **{"Retry-After": "5"}),
        release,
    )
    quotes = SyntheticQuotes()
    key = client(server, clock, quotes).fetch_key(120)
    assert bytes(key.key) == PASSPHRASE
    nonces = [r for r in server.requests if r.method == "GET"]
    assert len(nonces) == 6
    public_halves = {rd[32:] for rd in quotes.calls}
    assert len(public_halves) == 6, "a new HPKE key pair every attempt"
    assert clock.sleeps[1] >= 3
    assert clock.sleeps[2] >= 7
    assert clock.sleeps[4] >= 5


def test_backoff_grows_exponentially_with_jitter(server: ScriptedServer, clock: FakeClock) -> None:
    server.script("GET", protocol.NONCE_PATH, Answer(500, {"detail": "x"}))
    with pytest.raises(DeadlineExceeded) as caught:
        fetch(server, clock, deadline=60)
    sleeps = clock.sleeps
    assert 0.25 <= sleeps[0] <= 0.5
    assert 0.5 <= sleeps[1] <= 1.0
    assert 1.0 <= sleeps[2] <= 2.0
    assert all(s <= 10 for s in sleeps)
    assert clock.now - 1000 <= 60
    assert "server_error" in caught.value.message
    assert caught.value.reason == LocalReason.DEADLINE_EXCEEDED


def test_retry_after_beyond_the_deadline_gives_up_now(
    server: ScriptedServer, clock: FakeClock
) -> None:
    server.script(
        "GET", protocol.NONCE_PATH, refusal(429, "rate_limited", "x", **{"Retry-After": "600"})
    )
    with pytest.raises(DeadlineExceeded, match="rate_limited"):
        fetch(server, clock, deadline=30)
    assert clock.sleeps == []
    assert clock.now == 1000.0


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (403, "measurement_mismatch"),
        (403, "debug_td"),
        (401, "nonce_used"),
        (422, "quote_malformed"),
        (403, "tcb_status_rejected"),
    ],
)
def test_definitive_refusal_stops_at_once(
    server: ScriptedServer, clock: FakeClock, status: int, reason: str
) -> None:
    server.script("GET", protocol.NONCE_PATH, nonce_answer)
    server.script("POST", protocol.BOOT_ATTESTATION_PATH, refusal(status, reason, "rtmr1 differs"))
    with pytest.raises(ServerRefused) as caught:
        fetch(server, clock)
    assert caught.value.reason == reason
    assert caught.value.message == "rtmr1 differs"
    assert caught.value.status == status
    assert len(server.requests) == 2
    assert clock.sleeps == []


def test_unreachable_server_is_retried_until_the_deadline(clock: FakeClock) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    quotes = SyntheticQuotes()
    boot = BootClient(
        f"http://127.0.0.1:{port}", make_session(None), quotes, clock=clock, sleep=clock.sleep
    )
    with pytest.raises(DeadlineExceeded) as caught:
        boot.fetch_key(20)
    assert "server_unreachable" in caught.value.message
    assert len(clock.sleeps) >= 4
    assert quotes.calls == []


def test_tsm_failure_is_final(server: ScriptedServer, clock: FakeClock) -> None:
    class Broken:
        def get_quote(self, report_data: bytes) -> bytes:
            raise TsmError(LocalReason.TSM_UNAVAILABLE, "no provider")

    server.script("GET", protocol.NONCE_PATH, nonce_answer)
    boot = BootClient(server.url, make_session(None), Broken(), clock=clock, sleep=clock.sleep)
    with pytest.raises(TsmError):
        boot.fetch_key(60)
    assert clock.sleeps == []


@pytest.mark.parametrize(
    "answer",
    [
        Answer(200, {"attestation_id": "a", "image": "i", "verified_at": "t"}),
        Answer(200, {"attestation_id": "a", "image": "i", "verified_at": "t", "sealed_key": "@@"}),
        Answer(200, raw=b"not json"),
        Answer(200, ["a list"]),
    ],
)
def test_unusable_release_is_response_invalid(
    server: ScriptedServer, clock: FakeClock, answer: Answer
) -> None:
    server.script("GET", protocol.NONCE_PATH, nonce_answer)
    server.script("POST", protocol.BOOT_ATTESTATION_PATH, answer)
    with pytest.raises(TransportError) as caught:
        fetch(server, clock)
    assert caught.value.reason == LocalReason.RESPONSE_INVALID


def test_key_sealed_to_another_key_is_refused(server: ScriptedServer, clock: FakeClock) -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    other = X25519PrivateKey.generate().public_key()
    sealed = protocol.hpke_suite(protocol.Kem.X25519).encrypt(
        PASSPHRASE, other, protocol.key_release_info(bytes.fromhex(NONCE_HEX))
    )
    server.script("GET", protocol.NONCE_PATH, nonce_answer)
    server.script(
        "POST",
        protocol.BOOT_ATTESTATION_PATH,
        Answer(
            200,
            {
                "attestation_id": "a",
                "image": "i",
                "verified_at": "t",
                "sealed_key": protocol.b64encode(sealed),
            },
        ),
    )
    with pytest.raises(TransportError) as caught:
        fetch(server, clock)
    assert caught.value.reason == LocalReason.KEY_UNSEAL_FAILED


def test_bad_nonce_answer(server: ScriptedServer, clock: FakeClock) -> None:
    server.script("GET", protocol.NONCE_PATH, Answer(200, {"nonce": "xyz"}))
    with pytest.raises(TransportError) as caught:
        fetch(server, clock)
    assert caught.value.reason == LocalReason.RESPONSE_INVALID


def test_redirects_are_not_followed(server: ScriptedServer, clock: FakeClock) -> None:
    server.script("GET", protocol.NONCE_PATH, Answer(302, {}, {"Location": "http://evil/"}))
    with pytest.raises(TransportError, match="redirect"):
        fetch(server, clock)


def test_error_body_parsing() -> None:
    body = json.dumps({"detail": "d", "reason": "debug_td", "message": "TD is in debug mode"})
    assert parse_error_body(body) == ("debug_td", "TD is in debug mode")
    assert parse_error_body('{"detail": "only detail"}') == (None, "only detail")
    assert parse_error_body('{"reason": "BAD REASON\\n x=1", "message": "m"}') == (None, "m")
    assert parse_error_body("<html>  oops </html>") == (None, "<html> oops </html>")
    assert parse_error_body("") == (None, "(empty body)")


def test_error_classification() -> None:
    assert isinstance(error_from_response(500, "", None, "x"), TransientError)
    limited = error_from_response(429, "", "4", "x")
    assert isinstance(limited, TransientError)
    assert limited.reason == "rate_limited"
    assert limited.retry_after == 4
    expired = error_from_response(401, '{"reason": "nonce_expired", "message": "m"}', None, "x")
    assert isinstance(expired, TransientError)
    # Retryable by its reason, whatever status a proxy in between turned it into.
    database = error_from_response(
        409, '{"reason": "database_unavailable", "message": "m"}', "5", "x"
    )
    assert isinstance(database, TransientError)
    assert (database.reason, database.retry_after) == ("database_unavailable", 5)
    refused = error_from_response(404, "{}", None, "x")
    assert isinstance(refused, ServerRefused)
    assert refused.reason == "http_404"


def test_retry_after_formats() -> None:
    assert parse_retry_after("12") == 12
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0


def test_retry_until_reports_each_retry(clock: FakeClock) -> None:
    seen: list[tuple[str, float]] = []
    outcomes: list[object] = [TransientError("server_error", "a"), "done"]

    def attempt() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return str(outcome)

    result = retry_until(
        Deadline.after(10, clock),
        attempt,
        sleep=clock.sleep,
        on_retry=lambda error, delay: seen.append((error.reason, delay)),
        jitter=lambda low, high: high,
    )
    assert result == "done"
    assert seen == [("server_error", 0.5)]


@pytest.mark.parametrize(
    ("answer", "reason", "first"),
    [
        (Answer(404, {"detail": "Not Found"}), "http_404", "Not Found"),
        (
            Answer(404, {"detail": "Not Found", "reason": "not_found", "message": "Not Found"}),
            "not_found",
            "Not Found",
        ),
        (Answer(404, raw=b""), "http_404", "(empty body)"),
    ],
    ids=["framework", "server-shape", "empty"],
)
def test_a_wrong_url_path_names_the_url_and_agent_conf(
    server: ScriptedServer, clock: FakeClock, answer: Answer, reason: str, first: str
) -> None:
    server.script("GET", "/wrong" + protocol.NONCE_PATH, answer)
    base = server.url.replace("http://", "http://operator:s3cret@") + "/wrong"
    boot = BootClient(base, make_session(None), SyntheticQuotes(), clock=clock, sleep=clock.sleep)
    with pytest.raises(ServerRefused) as caught:
        boot.fetch_key(5)
    message = caught.value.message
    assert caught.value.reason == reason
    assert message.startswith(f"{first}: GET {server.url}/wrong{protocol.NONCE_PATH} ")
    assert "does not exist on the server" in message
    assert "check url in the [server] section of agent.conf" in message
    assert "s3cret" not in message and "operator" not in message


def test_a_not_found_naming_a_record_gets_no_url_hint(
    server: ScriptedServer, clock: FakeClock
) -> None:
    server.script("GET", protocol.NONCE_PATH, refusal(404, "not_found", "no server 'x'"))
    with pytest.raises(ServerRefused) as caught:
        fetch(server, clock)
    assert (caught.value.reason, caught.value.message) == ("not_found", "no server 'x'")
