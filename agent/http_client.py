"""HTTP client of the boot protocol (requests + tenacity), retrying under one deadline.

Every attempt is a whole exchange with fresh values: a new nonce, a new ephemeral HPKE
key pair, a new quote. Transient failures (connection errors, timeouts, 5xx, 429 and
the retryable reasons of agent.protocol) are retried with exponential backoff and
jitter, honouring Retry-After, until the deadline; a definitive refusal stops at once.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

from tdx_boot_attest.agent import protocol
from tdx_boot_attest.agent.errors import (
    AgentError,
    ConfigError,
    DeadlineExceeded,
    LocalReason,
    ServerRefused,
    TransientError,
    TransportError,
)
from tdx_boot_attest.agent.tsm import QuoteProvider

if TYPE_CHECKING:
    import requests
    import tenacity

    from tdx_boot_attest.agent.identity import Identity

T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], None]

BACKOFF_INITIAL: Final = 0.5
BACKOFF_MAX: Final = 10.0
_REASON_SHAPE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
_JSON: Final = {"Content-Type": "application/json", "Accept": "application/json"}
NOT_FOUND: Final = 404


class ReleasedKey:
    """The unsealed LUKS passphrase (in a bytearray, wiped by wipe()) and the verdict."""

    def __init__(self, attestation_id: str, image: str, verified_at: str, key: bytearray) -> None:
        self.attestation_id = attestation_id
        self.image = image
        self.verified_at = verified_at
        self.key = key

    def __repr__(self) -> str:
        return f"ReleasedKey(image={self.image!r}, attestation_id={self.attestation_id!r})"

    def wipe(self) -> None:
        """Overwrite the key bytes with zeros and empty the buffer. Raises nothing."""
        wipe(self.key)


def wipe(buffer: bytearray) -> None:
    """Zero ``buffer`` in place, then empty it. Raises nothing."""
    buffer[:] = bytes(len(buffer))
    del buffer[:]


@contextmanager
def released(key: ReleasedKey) -> Iterator[ReleasedKey]:
    """Use ``key`` and wipe it afterwards, whatever happens. Raises nothing itself."""
    try:
        yield key
    finally:
        key.wipe()


def make_session(ca_bundle: str | None) -> requests.Session:
    """A requests session verifying TLS against ``ca_bundle`` (or the default store).

    The environment is ignored (no proxies, netrc or CA overrides), so the boot path
    behaves the same everywhere. Raises nothing.
    """
    import requests

    session = requests.Session()
    session.trust_env = False
    session.verify = ca_bundle if ca_bundle else True
    session.headers["User-Agent"] = "tdx-boot-agent/1"
    return session


class Deadline:
    """An absolute point on ``clock`` by which everything must be done."""

    def __init__(self, at: float, clock: Clock = time.monotonic) -> None:
        self.at = at
        self.clock = clock

    @classmethod
    def after(cls, seconds: float, clock: Clock = time.monotonic) -> Deadline:
        """The deadline ``seconds`` from now. Raises nothing."""
        return cls(clock() + seconds, clock)

    def remaining(self) -> float:
        """Seconds left (0 when passed). Raises nothing."""
        return max(0.0, self.at - self.clock())


def retry_until(
    deadline: Deadline,
    attempt: Callable[[], T],
    *,
    sleep: Sleep = time.sleep,
    on_retry: Callable[[TransientError, float], None] | None = None,
    jitter: Callable[[float, float], float] | None = None,
) -> T:
    """Call ``attempt`` until it succeeds, retrying only TransientError until ``deadline``.

    Backoff is exponential with jitter, at least the server's Retry-After, never past
    the deadline. Raises DeadlineExceeded (naming the last transient failure) or
    whatever definitive AgentError ``attempt`` raises.
    """
    import random

    # Most boots succeed at once: the retry machinery is imported only when needed.
    try:
        return attempt()
    except TransientError as exc:
        first = exc
    backoff = _Backoff(deadline, jitter or random.uniform)
    delay = backoff.after(1, first)
    if delay is None:
        raise _deadline_error(1, first)
    if on_retry is not None:
        on_retry(first, delay)
    sleep(delay)

    import tenacity

    def report(state: tenacity.RetryCallState) -> None:
        if on_retry is not None and state.next_action is not None:
            on_retry(_failure(state), state.next_action.sleep)

    def give_up(state: tenacity.RetryCallState) -> NoReturn:
        raise _deadline_error(_attempts(state), _failure(state))

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TransientError),
        stop=lambda state: backoff.after(_attempts(state), _failure(state)) is None,
        wait=lambda state: backoff.after(_attempts(state), _failure(state)) or 0.0,
        before_sleep=report,
        retry_error_callback=give_up,
        sleep=sleep,
    )
    return retrying(attempt)


class _Backoff:
    """The pause after each failed attempt: exponential with jitter, at least the
    server's Retry-After; None when the next attempt could not start before the deadline.

    tenacity asks for it twice per attempt (to decide whether to stop, then how long to
    wait), so the jitter is drawn once per attempt number.
    """

    def __init__(self, deadline: Deadline, draw: Callable[[float, float], float]) -> None:
        self.deadline = deadline
        self.draw = draw
        self.drawn: dict[int, float] = {}

    def after(self, attempts: int, error: TransientError) -> float | None:
        """The pause after ``attempts`` attempts, the last failing with ``error``.

        Raises nothing."""
        if attempts not in self.drawn:
            ceiling = min(BACKOFF_MAX, BACKOFF_INITIAL * 2 ** (attempts - 1))
            self.drawn[attempts] = self.draw(ceiling / 2, ceiling)
        delay = self.drawn[attempts]
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        # The next attempt could not start in time: give up now, not at the deadline.
        return None if delay >= self.deadline.remaining() else delay


def _attempts(state: tenacity.RetryCallState) -> int:
    """Attempts made so far: the first, made before tenacity, plus tenacity's."""
    return int(state.attempt_number) + 1


def _failure(state: tenacity.RetryCallState) -> TransientError:
    """The TransientError that ended the attempt ``state`` describes (tenacity retries
    nothing else). Raises nothing."""
    error = state.outcome.exception() if state.outcome is not None else None
    if not isinstance(error, TransientError):  # pragma: no cover - retry= admits no other
        raise TypeError(f"retry state without a transient failure: {error!r}")
    return error


def _deadline_error(attempts: int, last: TransientError | None) -> DeadlineExceeded:
    tail = f"; last: {last.reason}: {last.message}" if last else ""
    return DeadlineExceeded(f"deadline reached after {attempts} attempt(s){tail}")


class BootClient:
    """The agent's side of GET /servers/nonce + POST /servers/boot/attestation."""

    def __init__(
        self,
        base_url: str,
        session: requests.Session,
        quotes: QuoteProvider,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        on_retry: Callable[[TransientError, float], None] | None = None,
        kem: protocol.Kem = protocol.DEFAULT_KEM,
        event_log: bytes | None = None,
        identity: Identity | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.kem = kem
        # This boot's identity key (protocol v2): bound into every boot attestation.
        self.identity = identity
        # The firmware's event log (records only), sent with every attestation when known.
        self.event_log = event_log
        self.session = session
        self.quotes = quotes
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.clock = clock
        self.sleep = sleep
        self.on_retry = on_retry

    def fetch_key(self, deadline_seconds: float) -> ReleasedKey:
        """Attest and return the released key, retrying transient failures.

        Raises DeadlineExceeded, ServerRefused (definitive refusal: reason from the
        server), TransportError (TLS refused, invalid response, key not unsealable)
        or TsmError.
        """
        deadline = Deadline.after(deadline_seconds, self.clock)
        return retry_until(
            deadline,
            lambda: self._attempt(deadline),
            sleep=self.sleep,
            on_retry=self.on_retry,
        )

    def get_nonce(
        self,
        deadline: Deadline,
        path: str = protocol.NONCE_PATH,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        """One GET of a nonce; raises TransientError, ServerRefused or TransportError."""
        body = self.request("GET", path, deadline, headers=headers)
        nonce = body.get("nonce")
        if not isinstance(nonce, str):
            raise TransportError(LocalReason.RESPONSE_INVALID, f"{path}: no 'nonce' in the answer")
        try:
            return protocol.nonce_from_hex(nonce)
        except protocol.ProtocolError as exc:
            raise TransportError(LocalReason.RESPONSE_INVALID, f"{path}: {exc}") from None

    def request(
        self,
        method: str,
        path: str,
        deadline: Deadline,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Send one request; return the JSON object of a 2xx answer.

        Raises TransientError (connection, timeout, 5xx, 429, retryable reasons),
        ServerRefused (other 4xx) or TransportError (TLS, non-JSON answer).
        """
        import requests

        remaining = deadline.remaining()
        if remaining <= 0:
            raise DeadlineExceeded(f"no time left for {method} {path}")
        timeout = (min(self.connect_timeout, remaining), min(self.read_timeout, remaining))
        url = self.base_url + path
        try:
            response = self.session.request(
                method,
                url,
                data=body,
                headers={**_JSON, **(headers or {})},
                timeout=timeout,
                allow_redirects=False,
            )
        except requests.exceptions.SSLError as exc:
            raise TransportError(
                LocalReason.TLS_UNTRUSTED, f"TLS with {self.base_url} failed: {_brief(exc)}"
            ) from None
        except requests.exceptions.Timeout:
            raise TransientError(
                LocalReason.SERVER_UNREACHABLE, f"{method} {path}: timed out"
            ) from None
        except requests.exceptions.RequestException as exc:
            raise TransientError(
                LocalReason.SERVER_UNREACHABLE, f"{method} {path}: {_brief(exc)}"
            ) from None
        return _answer(response, f"{method} {path}")

    def with_event_log(self, fields: dict[str, str]) -> dict[str, str]:
        """``fields`` plus ``event_log`` (base64) when the client has one. Raises nothing."""
        if self.event_log is None:
            return fields
        return {**fields, "event_log": protocol.b64encode(self.event_log)}

    def _attempt(self, deadline: Deadline) -> ReleasedKey:
        nonce = self.get_nonce(deadline)
        private_key, public_key = new_key_pair(self.kem)
        if self.identity is None:
            report_data = protocol.report_data(nonce, public_key)
        else:
            report_data = protocol.boot_report_data(
                nonce, self.kem, public_key, self.identity.public_key
            )
        quote = self.quotes.get_quote(report_data)
        fields = {
            "quote": protocol.b64encode(quote),
            "public_key": protocol.b64encode(public_key),
            "kem": self.kem.value,
        }
        if self.identity is not None:
            fields["identity_key"] = protocol.b64encode(self.identity.public_key)
        body = json.dumps(self.with_event_log(fields)).encode()
        answer = self.request(
            "POST",
            protocol.BOOT_ATTESTATION_PATH,
            deadline,
            body=body,
            headers={protocol.NONCE_HEADER: protocol.nonce_to_hex(nonce)},
        )
        return _open_release(answer, self.kem, private_key, nonce)


def new_key_pair(kem: protocol.Kem) -> tuple[Any, bytes]:
    """A fresh HPKE key pair for ``kem``: (private key, raw public key bytes).

    The hybrid KEM's public key travels as ML-KEM-768's 1184 bytes followed by X25519's 32.
    Raises ConfigError(kem_unsupported) when this cryptography build has no ML-KEM.
    """
    from cryptography.hazmat.primitives.asymmetric import x25519

    classical = x25519.X25519PrivateKey.generate()
    classical_raw = classical.public_key().public_bytes_raw()
    if kem is protocol.Kem.X25519:
        return classical, classical_raw
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hpke
    from cryptography.hazmat.primitives.asymmetric import mlkem

    try:
        post_quantum = mlkem.MLKEM768PrivateKey.generate()
    except UnsupportedAlgorithm:
        raise ConfigError(
            f"[server] kem = {kem.value} needs ML-KEM-768, which this cryptography build "
            "(its OpenSSL) does not provide; use kem = x25519 or a newer cryptography",
            protocol.Reason.KEM_UNSUPPORTED,
        ) from None
    raw = post_quantum.public_key().public_bytes_raw() + classical_raw
    return hpke.MLKEM768X25519PrivateKey(post_quantum, classical), raw


def _open_release(
    answer: dict[str, Any], kem: protocol.Kem, private_key: Any, nonce: bytes
) -> ReleasedKey:
    fields = {}
    for name in ("attestation_id", "image", "verified_at", "sealed_key"):
        value = answer.get(name)
        if not isinstance(value, str):
            raise TransportError(
                LocalReason.RESPONSE_INVALID, f"the key release has no string field {name!r}"
            )
        fields[name] = value
    try:
        sealed = protocol.b64decode(fields["sealed_key"], "sealed_key")
    except protocol.ProtocolError as exc:
        raise TransportError(LocalReason.RESPONSE_INVALID, str(exc)) from None
    suite = protocol.hpke_suite(kem)
    try:
        key = bytearray(suite.decrypt(sealed, private_key, protocol.key_release_info(nonce)))
    except Exception:
        # Which check failed inside HPKE is not useful to anyone and must not leak.
        raise TransportError(
            LocalReason.KEY_UNSEAL_FAILED,
            "the sealed key does not open with this attempt's private key and nonce",
        ) from None
    return ReleasedKey(
        attestation_id=fields["attestation_id"],
        image=fields["image"],
        verified_at=fields["verified_at"],
        key=key,
    )


def _answer(response: requests.Response, what: str) -> dict[str, Any]:
    status = response.status_code
    if 200 <= status < 300:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise TransportError(
                LocalReason.RESPONSE_INVALID, f"{what}: HTTP {status} without a JSON object"
            )
        return body
    error = error_from_response(status, response.text, response.headers.get("Retry-After"), what)
    if status == NOT_FOUND and isinstance(error, ServerRefused) and _route_missing(error):
        # The server has no such endpoint: almost always a wrong server_url path.
        error.message = (
            f"{error.message}: {what.split(' ', 1)[0]} {_without_userinfo(response.url)} "
            "does not exist on the server; check url in the [server] section of agent.conf "
            "(the server's base URL, without /servers/...)"
        )
    raise error


def _route_missing(error: ServerRefused) -> bool:
    """Whether a 404 says the path is unknown (the framework's bare "Not Found", or an
    answer without a reason code) rather than naming a missing record. Raises nothing."""
    return error.reason == "http_404" or error.message == "Not Found"


def _without_userinfo(url: str) -> str:
    """``url`` without user and password, so the console line never carries them."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def error_from_response(
    status: int, text: str, retry_after_header: str | None, what: str
) -> AgentError:
    """The AgentError for a non-2xx answer (its body in the server's error shape).

    Returns TransientError for 429, 5xx and retryable reasons, ServerRefused otherwise.
    Raises nothing.
    """
    reason, message = parse_error_body(text)
    retry_after = parse_retry_after(retry_after_header)
    if status == 429 or status >= 500 or reason in protocol.RETRYABLE_REASONS:
        fallback = protocol.Reason.RATE_LIMITED if status == 429 else LocalReason.SERVER_ERROR
        return TransientError(
            reason or fallback, f"{what}: HTTP {status}: {message}", retry_after=retry_after
        )
    if status in (301, 302, 303, 307, 308):
        return TransportError(
            LocalReason.RESPONSE_INVALID, f"{what}: HTTP {status} redirect refused"
        )
    return ServerRefused(reason or f"http_{status}", message, status)


def parse_error_body(text: str) -> tuple[str | None, str]:
    """(reason, message) from ``{"reason", "message", "detail"}``; raises nothing.

    The reason is kept only when it looks like a reason code, so a hostile or broken
    answer cannot forge console fields.
    """
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        snippet = " ".join(text.split())[:200]
        return None, snippet or "(empty body)"
    reason = body.get("reason")
    message = body.get("message")
    detail = body.get("detail")
    if not isinstance(reason, str) or not _REASON_SHAPE.fullmatch(reason):
        reason = None
    if not isinstance(message, str):
        message = detail if isinstance(detail, str) else json.dumps(detail)[:200]
    return reason, message


def parse_retry_after(header: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None if absent/bad."""
    if not header:
        return None
    text = header.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _brief(exc: BaseException) -> str:
    """The innermost cause of a requests/urllib3 error, on one line."""
    inner: BaseException = exc
    while True:
        nxt = inner.__cause__ or inner.__context__
        if nxt is None or nxt is inner:
            break
        inner = nxt
    text = " ".join(str(inner).split()) or type(inner).__name__
    return text[:300]
